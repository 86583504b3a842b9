"""Serving benchmark (issue 14), one run, side by side, on the default model (`make model`).

1. Many customers at once, through `chatbot serve --parallel 4` on loopback (OpenAI streaming
   requests): 4 customers x 8 turns at the same time against 1 customer x 8 turns alone.
   Aggregate completion tokens/s (target: 4 at once >= 1.6x alone), p50/p95 time to first
   token of both, requests lost (target 0).
2. Why the batched engine: the same 4-vs-1 measure at the engine level for the batched engine
   (4 sequences in one context) and for a pool of 2 engines of cores/2 threads each.
3. A returning customer's history: time to first token of turn 10 / turn 2 (target <= 1.3x) for
   `chatbot ask --conversation` run as a new process per turn, and for 4 customers taking turns
   through `chatbot serve --parallel 1` (each turn finds another customer's state in the
   context, so its own comes back from the saved KV states). Medians of 3 runs of each (of
   the 4 customers in each served run).

Run: `.venv/bin/python bench/serve_bench.py [--model FILE.gguf] [--turns N] [--max-tokens N]`.
Figures on a machine shared with other work are noisy; the run takes 1-3 minutes on 2 cores.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from chat_bench import QUESTIONS  # noqa: E402  (the same ten-turn conversation)

from chatbot.engines.base import GenerationOptions, GenerationStats  # noqa: E402
from converter.paths import default_gguf_path  # noqa: E402

CUSTOMERS = 4
START_TIMEOUT_S = 120


@dataclass
class Turn:
    ttft_ms: float
    completion_tokens: int


@dataclass
class Run:
    """The turns of one phase, the wall time they took and the requests that failed."""

    turns: list[Turn] = field(default_factory=list)
    lost: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return sum(t.completion_tokens for t in self.turns) / self.seconds if self.seconds else 0

    def ttft(self, q: float) -> float:
        values = sorted(t.ttft_ms for t in self.turns)
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def questions_of(customer: int, turns: int) -> list[str]:
    """Each customer asks the questions in its own order, so no two conversations are alike."""
    return [QUESTIONS[(customer * 3 + n) % len(QUESTIONS)] for n in range(turns)]


def together(work: Callable[[int], None], n: int) -> float:
    """Run work(0..n-1) in n threads started at once; the wall time in seconds."""
    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


# -- through the server ---------------------------------------------------------------------


@contextmanager
def serving(model: Path, folder: Path, parallel: int, max_tokens: int):
    """`chatbot serve` on a free loopback port with its own database and KV folder."""
    folder.mkdir(parents=True, exist_ok=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = folder / "config.toml"
    config.touch()
    env = {
        **os.environ,
        "CHATBOT_DATA_DIR": str(folder / "data"),
        "CHATBOT_CONFIG": str(config),
        "CHATBOT_CACHE_DIR": str(folder / "cache"),
    }
    command = [sys.executable, "-m", "chatbot.cli", "serve", "--port", str(port)]
    command += ["--db", str(folder / "chat.db"), "--model", str(model)]
    command += ["--parallel", str(parallel), "--max-tokens", str(max_tokens)]
    log = folder / f"serve-{parallel}.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


def wait_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"chatbot serve exited:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"chatbot serve did not start:\n{log.read_text()}")


class Customer:
    """One customer's conversation with the server: streamed turns, TTFT seen by the client."""

    def __init__(self, url: str, max_tokens: int, number: int = 0):
        self.number = number  # which order of the questions this customer asks them in
        self.client = httpx.Client(base_url=url, timeout=300)
        self.max_tokens = max_tokens
        self.token: str | None = None

    def turn(self, text: str) -> Turn | None:
        body = {
            "messages": [{"role": "user", "content": text}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": self.max_tokens,
            "temperature": 0,
            **({"conversation_id": self.token} if self.token else {}),
        }
        start, first, tokens = time.perf_counter(), None, None
        with self.client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return None
            self.token = response.headers.get("X-Conversation-Id", self.token)
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                delta = (event.get("choices") or [{}])[0].get("delta", {})
                if first is None and delta.get("content"):
                    first = time.perf_counter()
                if event.get("usage"):
                    tokens = event["usage"]["completion_tokens"]
        if first is None or tokens is None:
            return None
        return Turn((first - start) * 1000, tokens)


def converse(customers: list[Customer], turns: range, run: Run) -> None:
    """These turns of every customer's conversation, all customers at the same time."""
    lock = threading.Lock()

    def one(number: int) -> None:
        questions = questions_of(customers[number].number, turns.stop)
        for n in turns:
            turn = customers[number].turn(questions[n])
            with lock:
                if turn is None:
                    run.lost += 1
                else:
                    run.turns.append(turn)

    run.seconds += together(one, len(customers))


def bench_concurrency(model: Path, folder: Path, turns: int, max_tokens: int) -> bool:
    """Alone, 4 at once, 4 at once, alone (half the turns each time): a machine whose load
    drifts during the run weighs on both sides alike."""
    print(f"\n1. {CUSTOMERS} customers at once vs one alone, `chatbot serve --parallel "
          f"{CUSTOMERS}`, {turns} turns each, max {max_tokens} tokens, greedy")  # fmt: skip
    alone, many = Run(), Run()
    with serving(model, folder, CUSTOMERS, max_tokens) as url:
        Customer(url, 4).turn("Hello")  # warm-up: first decode, page cache
        one = [Customer(url, max_tokens, CUSTOMERS)]
        group = [Customer(url, max_tokens, n) for n in range(CUSTOMERS)]
        first, second = range(turns // 2), range(turns // 2, turns)
        for customers, half, run in (
            (one, first, alone),
            (group, first, many),
            (group, second, many),
            (one, second, alone),
        ):
            converse(customers, half, run)
    print(f"{'':24}{'tok/s':>8}{'TTFT p50':>10}{'TTFT p95':>10}{'turns':>7}{'lost':>6}")
    for name, run in (("one customer alone", alone), (f"{CUSTOMERS} at once", many)):
        print(f"{name:24}{run.tokens_per_s:8.1f}{run.ttft(0.5):8.0f}ms{run.ttft(0.95):8.0f}ms"
              f"{len(run.turns):7}{run.lost:6}")  # fmt: skip
    ratio = many.tokens_per_s / alone.tokens_per_s if alone.tokens_per_s else 0.0
    ok = ratio >= 1.6 and alone.lost == many.lost == 0
    print(f"aggregate ratio {ratio:.2f}x (target >= 1.6x), lost {alone.lost + many.lost} "
          f"(target 0): {'ok' if ok else 'MISSED'}")  # fmt: skip
    return ok


# -- at the engine level: batched vs a pool -------------------------------------------------


class Pool:
    """The alternative: `size` one-customer engines, each customer kept on one of them."""

    def __init__(self, model: Path, size: int, threads: int):
        from chatbot.engines.llama import LlamaEngine

        self.engines = [LlamaEngine(model, 2048, threads) for _ in range(size)]

    def stream(self, customer: int, messages, options):
        return self.engines[customer % len(self.engines)].stream(messages, options)

    def close(self) -> None:
        for engine in self.engines:
            engine.close()


def engine_run(stream: Callable, customers: int, turns: int, max_tokens: int) -> Run:
    """Conversations straight on an engine: stream(customer, messages, options)."""
    run, lock = Run(), threading.Lock()
    options = GenerationOptions(max_tokens=max_tokens, temperature=0.0)

    def one(number: int) -> None:
        messages = []
        for text in questions_of(number, turns):
            messages.append({"role": "user", "content": text})
            chunks = list(stream(number, messages, options))
            stats = chunks[-1]
            assert isinstance(stats, GenerationStats)
            reply = "".join(c.text for c in chunks[:-1])
            messages.append({"role": "assistant", "content": reply})
            with lock:
                run.turns.append(Turn(stats.ttft_ms, stats.completion_tokens))

    run.seconds = together(one, customers)
    return run


def bench_batched_vs_pool(model: Path, turns: int, max_tokens: int) -> None:
    from chatbot.engines.batched import BatchedEngine

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    half = max(1, cores // 2)
    print(f"\n2. engine level, {turns} turns each: batched (one context, {CUSTOMERS} sequences, "
          f"adaptive threads <= {cores}) vs a pool of 2 engines ({half} thread each)")  # fmt: skip
    batched = BatchedEngine(model, 2048, parallel=CUSTOMERS)
    pool = Pool(model, 2, half)
    rows = []
    for name, stream in (
        ("batched", lambda _c, m, o: batched.stream(m, o)),
        ("pool of 2", pool.stream),
    ):
        stream(0, [{"role": "user", "content": "Hello"}], GenerationOptions(4, 0.0))  # warm-up
        stream(1, [{"role": "user", "content": "Hello"}], GenerationOptions(4, 0.0))
        alone = engine_run(stream, 1, turns, max_tokens)
        many = engine_run(stream, CUSTOMERS, turns, max_tokens)
        rows.append((name, alone, many))
    print(f"(the batched engine ended on {batched.tuner.threads} threads)")
    batched.close()
    pool.close()
    print(f"{'':12}{'alone tok/s':>12}{f'{CUSTOMERS} at once':>12}{'ratio':>8}{'TTFT p50':>10}")
    for name, alone, many in rows:
        print(f"{name:12}{alone.tokens_per_s:12.1f}{many.tokens_per_s:12.1f}"
              f"{many.tokens_per_s / alone.tokens_per_s:7.2f}x{many.ttft(0.5):8.0f}ms")  # fmt: skip


# -- history reuse --------------------------------------------------------------------------


def ask_turns(model: Path, folder: Path, max_tokens: int) -> list[float]:
    """Ten turns of one conversation, each a new `chatbot ask` process: the TTFT of each."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.toml"
    config.touch()
    env = {
        **os.environ,
        "CHATBOT_DATA_DIR": str(folder / "data"),
        "CHATBOT_CONFIG": str(config),
        "CHATBOT_CACHE_DIR": str(folder / "cache"),
    }
    base = [sys.executable, "-m", "chatbot.cli", "ask", "--json", "--model", str(model)]
    base += ["--db", str(folder / "chat.db"), "--max-tokens", str(max_tokens)]
    base += ["--temperature", "0"]
    ttfts, conversation = [], []
    for text in QUESTIONS:
        done = subprocess.run(
            [*base, text, *conversation], capture_output=True, text=True, env=env, timeout=300
        )
        if done.returncode != 0:
            raise SystemExit(f"chatbot ask failed: {done.stderr}")
        reply = json.loads(done.stdout)
        conversation = ["--conversation", str(reply["conversation_id"])]
        ttfts.append(reply["ttft_ms"])
    return ttfts


def interleaved_turns(model: Path, folder: Path, max_tokens: int) -> list[list[float]]:
    """4 customers taking turns through one slot: each one's TTFT per turn."""
    with serving(model, folder, 1, max_tokens) as url:
        customers = [Customer(url, max_tokens, n) for n in range(CUSTOMERS)]
        ttfts = [[] for _ in customers]
        for n in range(len(QUESTIONS)):
            for number, customer in enumerate(customers):
                turn = customer.turn(questions_of(number, len(QUESTIONS))[n])
                ttfts[number].append(turn.ttft_ms if turn else float("nan"))
    return ttfts


def bench_history(model: Path, folder: Path, max_tokens: int, repeats: int) -> bool:
    """Medians over conversations: one turn's TTFT is a single ~60 ms sample, and a blip of
    the machine moves it by a third."""
    print(f"\n3. TTFT of turn 10 vs turn 2 (max {max_tokens} tokens a reply, greedy)")
    asked = [ask_turns(model, folder / f"ask{r}", max_tokens) for r in range(repeats)]
    served = [
        conversation
        for r in range(repeats)
        for conversation in interleaved_turns(model, folder / f"interleaved{r}", max_tokens)
    ]
    ask = [statistics.median(run[n] for run in asked) for n in range(len(QUESTIONS))]
    turn2 = statistics.median(c[1] for c in served)
    turn10 = statistics.median(c[9] for c in served)
    ok = True
    for name, t2, t10 in (
        (f"`chatbot ask --conversation`, a process per turn ({repeats} runs)", ask[1], ask[9]),
        (
            f"`chatbot serve --parallel 1`, {CUSTOMERS} customers in turn ({repeats} runs)",
            turn2,
            turn10,
        ),
    ):
        ratio = t10 / t2
        ok &= ratio <= 1.3
        print(f"{name:66} turn 2 {t2:6.0f} ms  turn 10 {t10:6.0f} ms  {ratio:4.2f}x "
              f"{'ok' if ratio <= 1.3 else 'MISSED'}")  # fmt: skip
    print("ask, every turn (ms, medians): " + " ".join(f"{t:.0f}" for t in ask))
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--no-pool", action="store_true", help="skip the batched-vs-pool part")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each part-3 measure")
    args = parser.parse_args(argv)
    model = args.model or default_gguf_path()
    if not model.exists():
        raise SystemExit(f"no model at {model}: run `make model` or pass --model")
    print(f"serve bench: {model.name}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        folder = Path(tmp)
        ok = bench_concurrency(model, folder / "concurrency", args.turns, args.max_tokens)
        if not args.no_pool:
            bench_batched_vs_pool(model, min(args.turns, 3), 48)
        ok &= bench_history(model, folder / "history", 48, args.repeats)
    print(f"\nserve bench: {'all targets met' if ok else 'a target was missed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
