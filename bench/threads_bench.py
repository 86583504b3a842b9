"""Thread-count benchmark (issue 15): the adaptive default against fixed thread counts.

Decode tokens/s of SmolLM2-135M-Instruct Q4_K_M through LlamaEngine.stream, three engines side
by side: adaptive (no --threads), fixed 1 thread, fixed all cores. Three conditions: idle, one
CPU-bound process beside it, two beside it; the bench starts and stops those processes itself
(each also ends on its own after a deadline). Replies are interleaved, so drifting load from
elsewhere hits every engine alike. The adaptive engine is loaded once, while idle, and carries
its state through the conditions as a running app would: it must notice the load change.

Targets: adaptive >= 0.90x the best fixed count in every condition; >= 0.97x all cores idle.
Run: `.venv/bin/python bench/threads_bench.py [--rounds N] [--tokens N] [--budget S]` (about 3
minutes; each condition stops starting rounds after --budget seconds).
"""

import argparse
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chatbot.engines.base import GenerationOptions, GenerationStats  # noqa: E402
from chatbot.engines.llama import LlamaEngine  # noqa: E402
from chatbot.engines.threads import usable_cores  # noqa: E402
from converter.paths import default_gguf_path  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a long story about a dragon and a knight."}]
# A busy process: one core spinning in Python until killed or until its deadline passes.
BUSY = (
    "import sys, time\n"
    "end = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end: pass\n"
)
BUSY_DEADLINE_S = 180  # longer than any one condition takes; the bench stops them sooner
REPLY_LIMIT_S = 10.0
CONDITIONS = (("idle", 0), ("1 busy process", 1), ("2 busy processes", 2))


@dataclass
class Replies:
    """One engine's measured replies in one condition."""

    rates: list[float] = field(default_factory=list)  # decode tok/s
    threads: list[int] = field(default_factory=list)  # the count each reply used most
    tokens_on: Counter = field(default_factory=Counter)  # decode tokens at each thread count


def reply_rate(engine: LlamaEngine, tokens: int) -> tuple[float, int, dict[int, int]]:
    """One greedy reply of up to `tokens` tokens from an empty cache: decode tok/s, threads.

    A reply stops after REPLY_LIMIT_S: on a crowded machine too many threads crawl.
    """
    engine.llm.reset()
    stats = None
    deadline = time.perf_counter() + REPLY_LIMIT_S
    options = GenerationOptions(max_tokens=tokens, temperature=0.0)
    for item in engine.stream(PROMPT, options, lambda: time.perf_counter() > deadline):
        if isinstance(item, GenerationStats):
            stats = item
    return stats.decode_tps, engine.info.threads, engine.tuner.turn_counts()


def start_busy(count: int) -> list[subprocess.Popen]:
    procs = [
        subprocess.Popen([sys.executable, "-c", BUSY, str(BUSY_DEADLINE_S)]) for _ in range(count)
    ]
    if procs:
        time.sleep(0.5)  # spinning before the first reply
    return procs


def stop_busy(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(
    engines: list[LlamaEngine], busy: int, rounds: int, tokens: int, budget_s: float
) -> list[Replies]:
    """Up to `rounds` replies per engine with `busy` spinning processes beside them, interleaved;
    no new round once `budget_s` has passed (a machine busy with other work is slow)."""
    results = [Replies() for _ in engines]
    order = list(range(len(engines)))
    procs = start_busy(busy)
    start = time.perf_counter()
    try:
        for r in range(rounds):
            if r and time.perf_counter() - start > budget_s:
                break
            for i in order[r % len(order) :] + order[: r % len(order)]:  # rotate who goes first
                rate, threads, counts = reply_rate(engines[i], tokens)
                results[i].rates.append(rate)
                results[i].threads.append(threads)
                results[i].tokens_on.update(counts)
    finally:
        stop_busy(procs)
    return results


def ratio(a: float, b: float) -> float:
    """a / b; infinite when b made no tokens at all (a reply cut at REPLY_LIMIT_S)."""
    return a / b if b > 0 else float("inf")


def verdict(value: float, target: float) -> str:
    return f"{value:.2f}x ({'met' if value >= target else 'MISSED'})"


def report(rows: list[tuple[str, list[Replies]]], cores: int) -> None:
    header = (
        f"{'condition':<18} {'adaptive':>9} {'1 thread':>9} {f'{cores} threads':>10}"
        f"  {'adaptive/best fixed':>20}  {'adaptive/all cores':>19}  adaptive threads used"
    )
    print(f"\ndecode tok/s, medians per engine\n{header}\n{'-' * len(header)}")
    for condition, (adaptive, one, every) in rows:
        medians = [statistics.median(s.rates) for s in (adaptive, one, every)]
        best = max(medians[1:])
        to_all = ratio(medians[0], medians[2])
        idle_col = verdict(to_all, 0.97) if condition == "idle" else f"{to_all:.2f}x"
        print(
            f"{condition:<18} {medians[0]:>9.1f} {medians[1]:>9.1f} {medians[2]:>10.1f}"
            f"  {verdict(ratio(medians[0], best), 0.90):>20}  {idle_col:>19}"
            f"  {','.join(map(str, adaptive.threads))}"
        )
    print("targets: adaptive >= 0.90x best fixed in every condition; >= 0.97x all cores idle")
    for condition, (adaptive, *_fixed) in rows:
        spread = ", ".join(f"{n} thread(s) {c}" for n, c in sorted(adaptive.tokens_on.items()))
        print(f"adaptive, {condition}: decode tokens on {spread}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=default_gguf_path())
    parser.add_argument("--rounds", type=int, default=9, help="replies per engine and condition")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per reply")
    parser.add_argument("--budget", type=float, default=60, help="seconds per condition, about")
    args = parser.parse_args(argv)
    # A SIGTERM (a timeout) still runs the finally that stops the busy processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not args.model.exists():
        print(f"no model at {args.model}: run `make model` (or pass --model)")
        return 2
    cores = usable_cores()
    adaptive = LlamaEngine(args.model, n_ctx=1024)  # loaded while idle, as an app starts
    engines = [
        adaptive,
        LlamaEngine(args.model, n_ctx=1024, n_threads=1),
        LlamaEngine(args.model, n_ctx=1024, n_threads=cores),
    ]
    print(
        f"threads bench: {args.model.name}, {cores} usable cores, {args.rounds} replies of "
        f"{args.tokens} tokens per engine and condition; adaptive started on "
        f"{adaptive.info.threads} thread(s)"
    )
    rows = []
    try:
        for condition, busy in CONDITIONS:
            start = time.perf_counter()
            replies = measure(engines, busy, args.rounds, args.tokens, args.budget)
            rows.append((condition, replies))
            print(
                f"  {condition}: {len(replies[0].rates)} rounds in "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )
    finally:
        for engine in engines:
            engine.close()
    report(rows, cores)
    return 0


if __name__ == "__main__":
    sys.exit(main())
