"""Command-line flags for calibration, pruning, healing, imatrix and per-tensor types.

Kept apart so converter.cli.commands stays a list of subcommands; importing this module loads no
torch.
"""

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converter.errors import ConverterError
from converter.optimize.device import DEVICES
from converter.options import OptimizeOptions, QuantizeOptions

if TYPE_CHECKING:
    from converter.mix import MixTarget

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


# Flags that let the converter choose the types (converter.mix, converter.fastest). Read as
# text and parsed here, so a bad value is one `error:` line like every other bad input.
CHOICE_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "--target-size",
        {
            "metavar": "SIZE",
            "help": "choose a type per tensor so the file fits SIZE (bytes, or 105MB, 100MiB, "
            "0.1GB) with the least loss measured on the calibration text; replaces --quant",
        },
    ),
    (
        "--target-bpw",
        {
            "metavar": "BITS",
            "help": "like --target-size, as bits per weight over every tensor (e.g. 5.5)",
        },
    ),
    (
        "--fastest-within",
        {
            "metavar": "PCT",
            "help": "build plain types and mixes, measure each (perplexity on a calibration "
            "hold-out, speed on this machine) and write the fastest within PCT%% of F16's "
            "perplexity; replaces --quant",
        },
    ),
)


def add_optimize_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("calibration, pruning and recovery")
    for flag, options in OPTIMIZE_FLAGS:
        group.add_argument(flag, **options)
    choice = parser.add_argument_group("types chosen by measurement")
    for flag, options in CHOICE_FLAGS:
        choice.add_argument(flag, **options)


def mix_target(args: argparse.Namespace) -> "MixTarget | None":
    """--target-size or --target-bpw as a budget; None when neither is given."""
    from converter.mix import MixTarget, check_bpw, parse_size

    if args.target_size is not None and args.target_bpw is not None:
        raise ConverterError("give --target-size or --target-bpw, not both")
    if args.target_size is not None:
        return MixTarget(size=parse_size(args.target_size))
    if args.target_bpw is not None:
        return MixTarget(bpw=check_bpw(_number(args.target_bpw, "--target-bpw", "4.5")))
    return None


def fastest_within(args: argparse.Namespace) -> float | None:
    """--fastest-within as a positive percentage; None when not given."""
    if args.fastest_within is None:
        return None
    pct = _number(args.fastest_within, "--fastest-within", "5")
    if not 0 < pct < float("inf"):
        raise ConverterError(
            f"--fastest-within {args.fastest_within}: give a positive percentage, e.g. 5"
        )
    return pct


def _number(text: str, flag: str, example: str) -> float:
    try:
        return float(str(text).rstrip("%"))
    except ValueError:
        raise ConverterError(f"{flag} {text!r}: give a number, e.g. {example}") from None


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
