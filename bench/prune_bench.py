"""Importance matrix and pruning on SmolLM2-135M-Instruct, side by side in one run.

Rows: F16; Q4_K_M without the importance matrix; Q4_K_M with it; a pruned and healed Q4_K_M.
Columns: file size, parameters, perplexity on data/eval/heldout.txt (llama.cpp's method: 512-token
windows, second half scored), decode tokens/s (median of --repeats interleaved runs), and each
ratio to the unpruned F16. Then the issue's targets, each with its measured figure:
1. imatrix: Q4_K_M's perplexity increase over F16 at most 0.7x the increase without it;
2. pruned+healed Q4_K_M: >= 15% fewer block parameters, perplexity <= 1.20x the unpruned Q4_K_M
   (with imatrix, the same pipeline without pruning), decode >= 1.08x faster, smaller file.

Run: `.venv/bin/python bench/prune_bench.py [--prune-layers N] [--prune-ffn R] [--heal-steps N]
[--calibration FILE ...]`. The pruned model's FFN is refit by least squares before healing
(converter.optimize.refit); calibration defaults to every text file in data/calibration.
"""

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gguf  # noqa: E402

from converter import evaluate  # noqa: E402
from converter.default_model import ensure_default_checkpoint  # noqa: E402
from converter.options import ConvertOptions, OptimizeOptions, QuantizeOptions  # noqa: E402
from converter.pipeline import convert  # noqa: E402


@dataclass
class Row:
    name: str
    path: Path
    seconds: float
    block_params: int | None = None
    ppl: float = 0.0
    speeds: list[float] | None = None

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @property
    def params(self) -> int:
        return sum(int(t.n_elements) for t in gguf.GGUFReader(self.path).tensors)

    @property
    def speed(self) -> float:
        return statistics.median(self.speeds or [0.0])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prune-layers", type=int, default=1)
    parser.add_argument("--prune-ffn", type=float, default=1 / 6)
    parser.add_argument("--heal-steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="decode runs per model")
    parser.add_argument(
        "--calibration", type=Path, action="append", default=[], metavar="FILE",
        help="calibration text for the imatrix, refit and healing (repeatable; default: every "
        "data/calibration/*.txt)",
    )  # fmt: skip
    return parser.parse_args(argv)


def build(checkpoint: Path, folder: Path, args: argparse.Namespace) -> list[Row]:
    """Convert the four variants; the pruned one prints its plan as it goes."""
    calibration = OptimizeOptions(calibration=tuple(args.calibration))
    pruning = replace(
        calibration, prune_layers=args.prune_layers, prune_ffn=args.prune_ffn,
        heal_steps=args.heal_steps, device="cpu",
    )  # fmt: skip
    variants = {
        "F16": ConvertOptions(quant="F16"),
        "Q4_K_M": ConvertOptions(quant="Q4_K_M", quantize=QuantizeOptions(use_imatrix=False)),
        "Q4_K_M+imatrix": ConvertOptions(quant="Q4_K_M", optimize=calibration),
        "Q4_K_M pruned+healed": ConvertOptions(
            quant="Q4_K_M", optimize=pruning, show_progress=True
        ),
    }
    rows = []
    for name, options in variants.items():
        print(f"building {name} ...", flush=True)
        start = time.perf_counter()
        out = folder / f"{name.replace(' ', '_')}.gguf"
        result = convert(checkpoint, out, options, say=print)
        row = Row(name, result.output, time.perf_counter() - start)
        print(f"  {name}: {row.seconds:.0f}s, timings {result.report.timings_s}", flush=True)
        rows.append(row)
    return rows


def measure(rows: list[Row], repeats: int) -> None:
    """Perplexity once per model; decode speed interleaved so load changes hit every row."""
    text = evaluate.DEFAULT_EVAL_TEXT.read_text(encoding="utf-8")
    tokens = evaluate.tokenize_gguf(rows[0].path, text)
    for row in rows:
        row.ppl = evaluate.gguf_perplexity(row.path, tokens).value
        row.speeds = []
    for _ in range(repeats):
        for row in rows:
            row.speeds.append(evaluate.decode_speed(row.path))


def print_table(rows: list[Row]) -> None:
    base = rows[0]
    print(f"\n{'type':<22} {'size MB':>8} {'params':>12} {'ppl':>8} {'tok/s':>7}   "
          f"{'size/F16':>8} {'ppl/F16':>8} {'speed/F16':>9}")  # fmt: skip
    for r in rows:
        print(f"{r.name:<22} {r.size / 1e6:>8.1f} {r.params:>12,} {r.ppl:>8.3f} {r.speed:>7.1f}   "
              f"{r.size / base.size:>8.3f} {r.ppl / base.ppl:>8.3f} "
              f"{r.speed / base.speed:>9.3f}")  # fmt: skip


def check_targets(rows: list[Row], block_params_before: int) -> bool:
    f16, plain, imx, pruned = rows
    rise_plain, rise_imx = plain.ppl - f16.ppl, imx.ppl - f16.ppl
    checks = {
        f"imatrix: ppl rise {rise_imx:.3f} <= 0.7 x {rise_plain:.3f} = {0.7 * rise_plain:.3f}": (
            rise_imx <= 0.7 * rise_plain
        ),
        f"pruned: block params -{1 - pruned.block_params / block_params_before:.1%} >= 15%": (
            pruned.block_params <= 0.85 * block_params_before
        ),
        f"pruned: ppl {pruned.ppl:.3f} <= 1.20 x {imx.ppl:.3f} = {1.2 * imx.ppl:.3f}": (
            pruned.ppl <= 1.2 * imx.ppl
        ),
        f"pruned: decode {pruned.speed / imx.speed:.3f}x >= 1.08x": pruned.speed
        >= 1.08 * imx.speed,
        f"pruned: file {pruned.size / 1e6:.1f} MB < {imx.size / 1e6:.1f} MB": pruned.size
        < imx.size,
    }
    print("\ntargets (issue 4):")
    for line, ok in checks.items():
        print(f"  [{'met' if ok else 'NOT MET'}] {line}")
    return all(checks.values())


def block_parameters(path: Path) -> int:
    return sum(
        int(t.n_elements) for t in gguf.GGUFReader(path).tensors if t.name.startswith("blk.")
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    checkpoint = ensure_default_checkpoint()
    plan = f"{args.prune_layers} blocks, FFN -{args.prune_ffn:.3f}, {args.heal_steps} heal steps"
    print(f"SmolLM2-135M-Instruct, {evaluate.n_threads()} threads; pruning plan: {plan}")
    with tempfile.TemporaryDirectory() as folder:
        rows = build(checkpoint, Path(folder), args)
        before = block_parameters(rows[0].path)
        rows[3].block_params = block_parameters(rows[3].path)
        measure(rows, args.repeats)
        print_table(rows)
        check_targets(rows, before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
