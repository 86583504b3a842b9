"""Command-line flags for calibration, pruning, healing, imatrix and per-tensor types.

Kept beside converter.optimize so converter.cli stays a list of subcommands; importing this
module loads no torch.
"""

import argparse
from pathlib import Path
from typing import Any

from converter.device import DEVICES
from converter.errors import ConverterError


def add_optimize_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("calibration, pruning and recovery")
    group.add_argument(
        "--calibration",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="calibration text (repeatable; default data/calibration/"
        "calibration.txt); never the evaluation text",
    )
    group.add_argument(
        "--prune-layers",
        type=int,
        default=0,
        metavar="N",
        help="remove the N blocks that change their input least",
    )
    group.add_argument(
        "--prune-ffn",
        type=float,
        default=0.0,
        metavar="RATIO",
        help="remove this share of FFN neurons (activation x weight norm)",
    )
    group.add_argument(
        "--prune-heads",
        type=float,
        default=0.0,
        metavar="N",
        help="remove N KV-head groups per block (or a ratio below 1)",
    )
    group.add_argument(
        "--prune",
        type=float,
        default=0.0,
        metavar="RATIO",
        help="automatic plan removing about RATIO of the block parameters, "
        "mixing depth and width where calibration says it hurts least",
    )
    group.add_argument(
        "--per-layer",
        action="store_true",
        help="let FFN widths and head counts differ per block (writes deci)",
    )
    group.add_argument(
        "--heal-steps",
        type=int,
        default=0,
        metavar="N",
        help="distill from the unpruned model for N steps after pruning",
    )
    group.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where the torch steps run (auto: a GPU when torch sees one)",
    )
    group.add_argument(
        "--no-imatrix",
        action="store_true",
        help="quantize without the importance matrix (on by default below 8 bits)",
    )
    group.add_argument(
        "--tensor-type",
        action="append",
        default=[],
        metavar="PATTERN=TYPE",
        help="type for tensors whose name matches PATTERN, e.g. 'token_embd=Q8_0' (repeatable)",
    )
    group.add_argument(
        "--evaluate",
        action="store_true",
        help="report perplexity and decode speed before and after",
    )


def optimize_options(args: argparse.Namespace) -> dict[str, Any]:
    """ConvertOptions fields from the parsed flags."""
    return {
        "calibration": list(args.calibration),
        "prune_layers": args.prune_layers,
        "prune_ffn": args.prune_ffn,
        "prune_heads": args.prune_heads,
        "prune": args.prune,
        "per_layer": args.per_layer,
        "heal_steps": args.heal_steps,
        "device": args.device,
        "use_imatrix": not args.no_imatrix,
        "tensor_types": [parse_tensor_type(item) for item in args.tensor_type],
        "evaluate": args.evaluate,
    }


def parse_tensor_type(item: str) -> tuple[str, str]:
    pattern, sep, type_name = item.rpartition("=")
    if not sep or not pattern or not type_name:
        raise ConverterError(f"--tensor-type {item!r}: write PATTERN=TYPE, e.g. token_embd=Q8_0")
    return pattern, type_name.upper()
