"""Command-line flags for calibration, pruning, healing, imatrix and per-tensor types.

Kept apart so converter.cli.commands stays a list of subcommands; importing this module loads no
torch.
"""

import argparse
from pathlib import Path
from typing import Any

from converter.errors import ConverterError
from converter.optimize.device import DEVICES
from converter.options import OptimizeOptions, QuantizeOptions

# The flags as data: (flag, add_argument keywords).
OPTIMIZE_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "--calibration",
        {
            "type": Path,
            "action": "append",
            "default": [],
            "metavar": "FILE",
            "help": "calibration text (repeatable; default: every .txt file in "
            "data/calibration); never the evaluation text",
        },
    ),
    (
        "--prune-layers",
        {
            "type": int,
            "default": 0,
            "metavar": "N",
            "help": "remove the N blocks that change their input least",
        },
    ),
    (
        "--prune-ffn",
        {
            "type": float,
            "default": 0.0,
            "metavar": "RATIO",
            "help": "remove this share of FFN neurons (activation x weight norm)",
        },
    ),
    (
        "--prune-heads",
        {
            "type": float,
            "default": 0.0,
            "metavar": "N",
            "help": "remove N KV-head groups per block (or a ratio below 1)",
        },
    ),
    (
        "--prune",
        {
            "type": float,
            "default": 0.0,
            "metavar": "RATIO",
            "help": "automatic plan removing about RATIO of the block parameters, "
            "mixing depth and width where calibration says it hurts least",
        },
    ),
    (
        "--per-layer",
        {
            "action": "store_true",
            "help": "let FFN widths and head counts differ per block (writes deci)",
        },
    ),
    (
        "--heal-steps",
        {
            "type": int,
            "default": 0,
            "metavar": "N",
            "help": "distill from the unpruned model for N steps after pruning",
        },
    ),
    (
        "--device",
        {
            "choices": DEVICES,
            "default": "auto",
            "help": "where the torch steps run (auto: a GPU when torch sees one)",
        },
    ),
    (
        "--no-imatrix",
        {
            "action": "store_true",
            "help": "quantize without the importance matrix (on by default below 8 bits)",
        },
    ),
    (
        "--tensor-type",
        {
            "action": "append",
            "default": [],
            "metavar": "PATTERN=TYPE",
            "help": "type for tensors whose name matches PATTERN, e.g. 'token_embd=Q8_0' "
            "(repeatable)",
        },
    ),
    (
        "--evaluate",
        {
            "action": "store_true",
            "help": "report perplexity and decode speed before and after",
        },
    ),
)


def add_optimize_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("calibration, pruning and recovery")
    for flag, options in OPTIMIZE_FLAGS:
        group.add_argument(flag, **options)


def optimize_options(args: argparse.Namespace) -> OptimizeOptions:
    """Calibration, pruning and healing, from the parsed flags."""
    return OptimizeOptions(
        calibration=tuple(args.calibration),
        prune_layers=args.prune_layers,
        prune_ffn=args.prune_ffn,
        prune_heads=args.prune_heads,
        prune=args.prune,
        per_layer=args.per_layer,
        heal_steps=args.heal_steps,
        device=args.device,
    )


def quantize_options(args: argparse.Namespace) -> QuantizeOptions:
    """The quantizer's threads, importance matrix and per-tensor types, from the parsed flags."""
    return QuantizeOptions(
        threads=args.threads,
        tensor_types=tuple(parse_tensor_type(item) for item in args.tensor_type),
        use_imatrix=not args.no_imatrix,
    )


def parse_tensor_type(item: str) -> tuple[str, str]:
    pattern, sep, type_name = item.rpartition("=")
    if not sep or not pattern or not type_name:
        raise ConverterError(f"--tensor-type {item!r}: write PATTERN=TYPE, e.g. token_embd=Q8_0")
    return pattern, type_name.upper()
