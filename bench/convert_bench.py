"""Conversion benchmark on SmolLM2-135M-Instruct: F16 against Q4_K_M, side by side in one run.

1. `converter` run in a subprocess per type: wall time and the child's own peak RSS (os.wait4),
   medians over --repeats runs; the output file size and the size ratio Q4_K_M / F16.
2. Perplexity of both outputs on data/eval/heldout.txt, on the same token windows as transformers
   in float32 (llama.cpp's method: 512-token windows, second half scored), and decode tokens/s.

Run: `.venv/bin/python bench/convert_bench.py [--repeats N] [--quants F16 Q4_K_M] [--no-ppl]`.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converter import evaluate  # noqa: E402
from converter.default_model import ensure_default_checkpoint  # noqa: E402


@dataclass
class Run:
    """One conversion, measured from outside the converter's process."""

    seconds: float
    peak_rss: int  # bytes
    size: int  # bytes of the output file


def convert_once(checkpoint: Path, output: Path, quant: str) -> Run:
    """`python -m converter SRC -o OUT --quant Q -q` in a child; wait4 gives its own peak RSS."""
    cmd = [sys.executable, "-m", "converter", str(checkpoint), "-o", str(output)]
    start = time.perf_counter()
    child = subprocess.Popen([*cmd, "--quant", quant, "-q"], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"converter failed ({child.returncode}) converting to {quant}")
    # Linux reports ru_maxrss in KiB.
    return Run(seconds=seconds, peak_rss=usage.ru_maxrss * 1024, size=output.stat().st_size)


def bench_conversions(
    checkpoint: Path, quants: list[str], repeats: int, folder: Path
) -> dict[str, list[Run]]:
    """Alternate the types in each round so machine load drifts hit both alike."""
    runs: dict[str, list[Run]] = {q: [] for q in quants}
    for round_ in range(repeats):
        for quant in quants:
            out = folder / f"{quant}.gguf"
            out.unlink(missing_ok=True)
            runs[quant].append(convert_once(checkpoint, out, quant))
            print(f"  round {round_ + 1}/{repeats} {quant}: {runs[quant][-1].seconds:.1f}s")
    return runs


def print_conversion_table(runs: dict[str, list[Run]]) -> None:
    print(f"\n{'type':<8} {'median s':>9} {'min s':>7} {'peak RSS MiB':>13} {'size MB':>9}")
    for quant, rs in runs.items():
        print(
            f"{quant:<8} {statistics.median(r.seconds for r in rs):>9.2f} "
            f"{min(r.seconds for r in rs):>7.2f} "
            f"{statistics.median(r.peak_rss for r in rs) / 2**20:>13.0f} "
            f"{rs[-1].size / 1e6:>9.1f}"
        )
    if {"F16", "Q4_K_M"} <= runs.keys():
        ratio = runs["Q4_K_M"][-1].size / runs["F16"][-1].size
        speed = statistics.median(r.seconds for r in runs["Q4_K_M"]) / statistics.median(
            r.seconds for r in runs["F16"]
        )
        print(f"size ratio Q4_K_M / F16: {ratio:.3f}; conversion time ratio: {speed:.2f}")


def print_quality_table(checkpoint: Path, folder: Path, quants: list[str]) -> None:
    """Perplexity of every output and of transformers, all on the same token windows."""
    text = evaluate.DEFAULT_EVAL_TEXT.read_text(encoding="utf-8")
    tokens = evaluate.tokenize_gguf(folder / f"{quants[0]}.gguf", text)
    reference = evaluate.hf_perplexity(checkpoint, tokens)
    print(
        f"\nperplexity on {evaluate.DEFAULT_EVAL_TEXT.name}: {reference.n_scored} tokens scored, "
        f"{reference.n_windows} windows of {reference.ctx}"
    )
    print(f"{'model':<22} {'perplexity':>10} {'vs fp32':>8} {'decode tok/s':>13}")
    print(f"{'transformers fp32':<22} {reference.value:>10.3f} {'':>8} {'':>13}")
    for quant in quants:
        path = folder / f"{quant}.gguf"
        ppl = evaluate.gguf_perplexity(path, tokens)
        speed = statistics.median(evaluate.decode_speed(path) for _ in range(3))
        delta = ppl.value / reference.value - 1
        print(f"{'GGUF ' + quant:<22} {ppl.value:>10.3f} {delta:>+8.2%} {speed:>13.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="conversions per type")
    parser.add_argument("--quants", nargs="+", default=["F16", "Q4_K_M"], metavar="TYPE")
    parser.add_argument("--no-ppl", action="store_true", help="skip the perplexity table")
    args = parser.parse_args(argv)

    checkpoint = ensure_default_checkpoint()
    print(f"source: {checkpoint} ({evaluate.n_threads()} threads available)")
    with tempfile.TemporaryDirectory(prefix="convert-bench-") as tmp:
        folder = Path(tmp)
        runs = bench_conversions(checkpoint, args.quants, args.repeats, folder)
        print_conversion_table(runs)
        if not args.no_ppl:
            print_quality_table(checkpoint, folder, args.quants)
    return 0


if __name__ == "__main__":
    sys.exit(main())
