"""The speed/quality frontier of SmolLM2-135M-Instruct: every type, mixes and pruning, one run.

Rows: F16; the plain llama.cpp types (with the importance matrix); pure files (every matrix one
type); `--target-size` mixes at Q4_K_M's and Q3_K_M's sizes (and the other mixes
`--fastest-within` builds); pruned variants. Columns: file size, perplexity on
data/eval/heldout.txt (llama.cpp's method), decode tokens/s, prompt tokens/s and CPU seconds per
1,000 generated tokens (median of --rounds interleaved rounds), and `*` on the frontier (no other
row both decodes faster and has lower perplexity). Then the issue's targets, each with its
figure, and `--fastest-within` as it would choose (on the calibration hold-out), with the chosen
file's held-out figures. Writes frontier.json and frontier.png to --out.

The float file is converted once, the importance matrix and the sensitivity are measured once,
and every other file is quantized from them; all of it is cached in --cache (reruns skip what
is there). Run: `.venv/bin/python bench/frontier_bench.py [--threads N] [--no-prune]`.
"""

import argparse
import json
import pickle
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from converter import evaluate, fastest, frontier  # noqa: E402
from converter.default_model import ensure_default_checkpoint  # noqa: E402
from converter.frontier import Row  # noqa: E402
from converter.optimize.calibrate import read_calibration_text  # noqa: E402
from converter.options import ConvertOptions, OptimizeOptions  # noqa: E402
from converter.pipeline import convert  # noqa: E402

EXTRA_PLAIN = ("Q3_K_S", "IQ3_M", "IQ3_S", "Q2_K")
RESULTS = Path(__file__).resolve().parent / "results"
# Pruned variants: row name -> convert options. Each is slow to make (calibration, pruning,
# refit, healing, and the pruning check against plain types) and cached: the automatic plan
# healed at Q4_K_M, and two blocks of depth alone on top of a lower type (Q4_0).
PRUNED = {
    "pruned 0.15+heal100 Q4_K_M": ConvertOptions(
        quant="Q4_K_M", optimize=OptimizeOptions(prune=0.15, heal_steps=100, device="cpu")
    ),
    "pruned 2 blocks Q4_0": ConvertOptions(
        quant="Q4_0", optimize=OptimizeOptions(prune_layers=2, device="cpu")
    ),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="default: every core")
    parser.add_argument("--rounds", type=int, default=frontier.ROUNDS)
    parser.add_argument("--pct", type=float, default=5.0, help="--fastest-within's PCT")
    parser.add_argument("--no-prune", action="store_true", help="leave out the pruned rows")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "frontier-bench-cache"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def cached(path: Path, make):
    """`make()`'s result, pickled at `path` (what the first run measured, reused after)."""
    if path.exists():
        return pickle.loads(path.read_bytes())
    value = make()
    path.write_bytes(pickle.dumps(value))
    return value


def convert_once(checkpoint: Path, path: Path, options: ConvertOptions) -> Path:
    if not path.exists():
        print(f"converting {path.name} ...", flush=True)
        convert(checkpoint, path, options, say=print)
    return path


def pruned_path(cache: Path, name: str) -> Path:
    return cache / f"{name.replace(' ', '_').replace('+', '_')}.gguf"


def imatrix_for(checkpoint: Path, cache: Path) -> dict[str, np.ndarray]:
    """The importance matrix the converter computes when quantizing (24 calibration windows)."""

    def make():
        from converter.checkpoint import Checkpoint
        from converter.optimize.run import optimize
        from converter.report import Timings

        print("importance matrix ...", flush=True)
        done = optimize(
            Checkpoint.open(checkpoint), OptimizeOptions(), imatrix=True, progress=False,
            timings=Timings(), say=print,
        )  # fmt: skip
        return done.imatrix

    return cached(cache / "imatrix.pkl", make)


def build_rows(checkpoint: Path, cache: Path, args, text: str) -> list[Row]:
    """Every row's file, made (or found in the cache)."""
    f32 = convert_once(checkpoint, cache / "F32.gguf", ConvertOptions(quant="F32"))
    f16 = convert_once(checkpoint, cache / "F16.gguf", ConvertOptions(quant="F16"))
    build = fastest.Builder(f32, cache, imatrix_for(checkpoint, cache), threads=args.threads)
    tick = lambda name: print(f"  {name}", flush=True)  # noqa: E731
    rows = [Row("F16", f16, "float"), *build.plain(tick)]
    rows += [Row(q, build.quantize(q, q), "plain") for q in EXTRA_PLAIN]
    prompt = frontier.prompt_ids(f16, text)
    pricing = [r for r in rows if r.kind == "pure" or r.name == "Q8_0"]
    print("pricing types by decode speed ...", flush=True)
    frontier.measure_speeds(pricing, prompt, rounds=1, threads=args.threads)
    print("sensitivity ...", flush=True)
    sens = cached(cache / "sensitivity.pkl", lambda: build.sensitivity(text, lambda _n: None))
    sizes = {r.name: r.file_bytes for r in rows if r.name in fastest.SIZE_MIXES}
    rows += build.size_mixes(sens, sizes, tick)
    rows += build.speed_mixes(sens, pricing, tick)
    if not args.no_prune:
        for name, options in PRUNED.items():
            path = convert_once(checkpoint, pruned_path(cache, name), options)
            rows.append(Row(name, path, "pruned"))
    return rows


def measure(rows: list[Row], text: str, args) -> dict[str, float]:
    """Held-out perplexity and speed per row; returns the calibration hold-out perplexities."""
    heldout = evaluate.DEFAULT_EVAL_TEXT.read_text(encoding="utf-8")
    print("perplexity on data/eval/heldout.txt ...", flush=True)
    frontier.measure_perplexity(rows, heldout)
    print("perplexity on the calibration hold-out ...", flush=True)
    copies = [replace(r) for r in rows]
    fastest.measure_holdout(copies, text, lambda _n: None)
    print(f"speed, {args.rounds} interleaved rounds ...", flush=True)
    frontier.measure_speeds(rows, frontier.prompt_ids(rows[0].path, text), rounds=args.rounds,
                            threads=args.threads)  # fmt: skip
    frontier.mark_frontier(rows)
    return {r.name: r.perplexity for r in copies}


def targets(rows: list[Row], holdout: dict[str, float], pct: float) -> tuple[dict, str]:
    """The issue's done-when checks, each with its figure; and the --fastest-within choice."""
    by = {r.name: r for r in rows}
    f16 = by["F16"]
    cli = [r for r in rows if r.kind != "pruned" and r.name not in EXTRA_PLAIN]  # its candidates
    picks = [replace(r, perplexity=holdout[r.name]) for r in cli]
    chosen, record = fastest.choose(picks, pct)
    pick = by[chosen.name]
    checks = {}
    for quant in ("Q4_K_M", "Q3_K_M"):
        mix, plain = by[f"mix @ {quant} size"], by[quant]
        checks[
            f"mix @ {quant} size ({mix.file_bytes / 1e6:.1f} MB <= {plain.file_bytes / 1e6:.1f}"
            f" MB): perplexity {mix.perplexity:.3f} < {quant}'s {plain.perplexity:.3f}"
        ] = mix.perplexity < plain.perplexity and mix.file_bytes <= plain.file_bytes
    pruned = [r for r in rows if r.kind == "pruned"]
    on = [r.name for r in pruned if r.on_frontier]
    checks[f"pruned rows on the frontier: {on or 'none'}"] = bool(on)
    ratio_p = pick.perplexity / f16.perplexity
    ratio_s = pick.speed.decode_tps / f16.speed.decode_tps
    checks[
        f"--fastest-within {pct:g} chose {pick.name}: held-out perplexity {ratio_p:.3f}x F16 "
        f"<= 1.05x, decode {ratio_s:.2f}x F16 >= 1.6x"
    ] = ratio_p <= 1.05 and ratio_s >= 1.6
    return checks, record.reason


def plot(rows: list[Row], path: Path) -> None:
    """Perplexity against decode tokens/s, frontier joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"float": "black", "plain": "tab:blue", "pure": "tab:cyan", "mix": "tab:orange",
              "pruned": "tab:red"}  # fmt: skip
    fig, ax = plt.subplots(figsize=(10, 6.5))
    for r in rows:
        ax.scatter(r.speed.decode_tps, r.perplexity, color=colors[r.kind],
                   edgecolors="black" if r.on_frontier else "none", s=60, zorder=3)  # fmt: skip
        ax.annotate(r.name, (r.speed.decode_tps, r.perplexity), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")  # fmt: skip
    front = sorted((r for r in rows if r.on_frontier), key=lambda r: r.speed.decode_tps)
    ax.plot([r.speed.decode_tps for r in front], [r.perplexity for r in front], "k--", lw=0.8)
    for kind, color in colors.items():
        ax.scatter([], [], color=color, label=kind)
    ax.set_xlabel("decode tokens/s (this machine)")
    ax.set_ylabel("perplexity, data/eval/heldout.txt")
    ax.set_title("SmolLM2-135M-Instruct: speed/quality frontier (dashed; outlined = on it)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    args.cache.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = ensure_default_checkpoint()
    threads = args.threads or evaluate.n_threads()
    print(f"SmolLM2-135M-Instruct, {threads} threads; cache {args.cache}", flush=True)
    text = read_calibration_text()
    rows = build_rows(checkpoint, args.cache, args, text)
    holdout = measure(rows, text, args)
    print("\n" + frontier.format_table(rows))
    checks, reason = targets(rows, holdout, args.pct)
    print(f"\n--fastest-within {args.pct:g} (calibration hold-out): {reason}")
    print("\ntargets (issue 16):")
    for line, ok in checks.items():
        print(f"  [{'met' if ok else 'NOT MET'}] {line}")
    results = {
        "threads": threads,
        "rows": [r.to_dict() | {"holdout_perplexity": holdout[r.name]} for r in rows],
        "fastest_within": reason,
        "targets": {line: ok for line, ok in checks.items()},
        "markdown": frontier.markdown_table(rows),
    }
    (args.out / "frontier.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(rows, args.out / "frontier.png")
    print(f"\nwrote {args.out / 'frontier.json'} and {args.out / 'frontier.png'} "
          f"in {time.perf_counter() - start:.0f}s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
