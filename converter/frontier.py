"""Files side by side: size, perplexity and speed on this machine, and which are on the frontier.

A file is on the frontier when no other file is both faster (decode tokens/s) and better (lower
perplexity). Speed is measured for every file in interleaved rounds (round 1 of every file, then
round 2, ...) and each file keeps its median round, so a burst of load from other programs slows
one round of one file, not its figure, and one lucky round does not set it either (the F16
reference's best round once made a 1.66x file read 1.54x). Used by `--fastest-within`
(converter.fastest) and by bench/frontier_bench.py.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converter import evaluate

PROMPT_TOKENS = 256
DECODE_TOKENS = 128
ROUNDS = 5


@dataclass(frozen=True)
class Speed:
    """One file's speed on this machine: the median round of each figure."""

    decode_tps: float  # generated tokens per second, one at a time
    prompt_tps: float  # prompt tokens per second, evaluated in one batch
    cpu_s_per_1k: float  # CPU seconds (every thread) per 1,000 generated tokens


@dataclass
class Row:
    """A candidate file and what was measured of it."""

    name: str
    path: Path
    kind: str  # float, plain, pure, mix, pruned
    perplexity: float = 0.0
    speed: Speed | None = None
    on_frontier: bool = False
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def file_bytes(self) -> int:
        return self.path.stat().st_size

    def to_dict(self) -> dict:
        speed = self.speed or Speed(0.0, 0.0, 0.0)
        return {
            "name": self.name,
            "kind": self.kind,
            "file_bytes": self.file_bytes,
            "perplexity": round(self.perplexity, 4),
            "decode_tps": round(speed.decode_tps, 2),
            "prompt_tps": round(speed.prompt_tps, 2),
            "cpu_s_per_1k": round(speed.cpu_s_per_1k, 3),
            "on_frontier": self.on_frontier,
            "note": self.note,
        }


def prompt_ids(gguf_path: Path, text: str, n_tokens: int = PROMPT_TOKENS) -> list[int]:
    """The first `n_tokens` tokens of `text` (repeated if short), as the file tokenizes them."""
    ids = evaluate.tokenize_gguf(gguf_path, text).ids or [0]
    return (ids * (n_tokens // len(ids) + 1))[:n_tokens]


def measure_once(
    gguf_path: Path, prompt: Sequence[int], n_tokens: int = DECODE_TOKENS, threads: int = 0
) -> Speed:
    """Evaluate the prompt in one batch, then decode `n_tokens` greedily: wall and CPU time."""
    import llama_cpp

    from converter import llama_log

    threads = threads or evaluate.n_threads()
    llama_log.install()
    llm = llama_cpp.Llama(
        model_path=str(gguf_path),
        n_ctx=len(prompt) + n_tokens + 8,
        n_batch=len(prompt),
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    try:
        start = time.perf_counter()
        llm.eval(list(prompt))
        prompt_s = time.perf_counter() - start
        n_vocab = llm.n_vocab()
        cpu, start = time.process_time(), time.perf_counter()
        for _ in range(n_tokens):
            row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
            llm.eval([int(np.ctypeslib.as_array(row, shape=(n_vocab,)).argmax())])
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        llm.close()
    return Speed(n_tokens / wall, len(prompt) / prompt_s, 1000.0 * cpu / n_tokens)


def measure_speeds(
    rows: Sequence[Row],
    prompt: Sequence[int],
    *,
    rounds: int = ROUNDS,
    threads: int = 0,
    tick: Callable[[str], None] | None = None,
) -> None:
    """Every row's speed, rounds interleaved across rows; each figure's median is kept."""
    seen: dict[str, list[Speed]] = {row.name: [] for row in rows}
    for _ in range(rounds):
        for row in rows:
            seen[row.name].append(measure_once(row.path, prompt, threads=threads))
            if tick:
                tick(row.name)
    for row in rows:
        runs = seen[row.name]
        row.speed = Speed(
            float(np.median([s.decode_tps for s in runs])),
            float(np.median([s.prompt_tps for s in runs])),
            float(np.median([s.cpu_s_per_1k for s in runs])),
        )


def measure_perplexity(rows: Sequence[Row], text: str, tick=None) -> None:
    """Perplexity of every row on the same token windows of `text` (the first row's tokens)."""
    tokens = evaluate.tokenize_gguf(rows[0].path, text)
    for row in rows:
        row.perplexity = evaluate.gguf_perplexity(row.path, tokens).value
        if tick:
            tick(row.name)


def mark_frontier(rows: Sequence[Row]) -> None:
    """On the frontier: no other row both decodes faster and has lower perplexity."""
    for row in rows:
        row.on_frontier = not any(dominates(other, row) for other in rows if other is not row)


def dominates(a: Row, b: Row) -> bool:
    """`a` decodes faster than `b` and has lower perplexity."""
    assert a.speed is not None and b.speed is not None
    return a.speed.decode_tps > b.speed.decode_tps and a.perplexity < b.perplexity


def _cells(rows: Sequence[Row], reference: Row | None) -> list[tuple]:
    """Per row: name, MB, perplexity, its ratio, decode tok/s, its ratio, prompt tok/s, CPU s
    per 1k tokens, on the frontier; ratios against `reference` (default: the first row)."""
    ref = reference or rows[0]
    assert ref.speed is not None
    cells = []
    for r in rows:
        s = r.speed or Speed(0.0, 0.0, 0.0)
        cells.append((
            r.name, r.file_bytes / 1e6, r.perplexity, r.perplexity / ref.perplexity,
            s.decode_tps, s.decode_tps / ref.speed.decode_tps, s.prompt_tps, s.cpu_s_per_1k,
            r.on_frontier,
        ))  # fmt: skip
    return cells


def format_table(rows: Sequence[Row], reference: Row | None = None) -> str:
    """An aligned table, one row per file, `*` on the frontier; ratios against `reference`."""
    lines = [
        f"  {'file':<30} {'size MB':>8} {'ppl':>7} {'ppl/ref':>7} {'decode':>7} {'x ref':>6} "
        f"{'prompt':>7} {'CPU s/1k':>8}  frontier"
    ]
    for name, mb, ppl, ppl_x, dec, dec_x, prompt, cpu, front in _cells(rows, reference):
        lines.append(
            f"  {name:<30} {mb:>8.1f} {ppl:>7.3f} {ppl_x:>7.3f} {dec:>7.1f} {dec_x:>6.2f} "
            f"{prompt:>7.0f} {cpu:>8.2f}  {'*' if front else ''}"
        )
    return "\n".join(lines)


def markdown_table(rows: Sequence[Row], reference: Row | None = None) -> str:
    """The same table as Markdown (for README)."""
    lines = [
        "| file | size MB | perplexity | ppl / F16 | decode tok/s | x F16 | prompt tok/s "
        "| CPU s / 1k tok | frontier |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, mb, ppl, ppl_x, dec, dec_x, prompt, cpu, front in _cells(rows, reference):
        lines.append(
            f"| {name} | {mb:.1f} | {ppl:.2f} | {ppl_x:.3f} | {dec:.0f} | {dec_x:.2f} | "
            f"{prompt:.0f} | {cpu:.1f} | {'yes' if front else ''} |"
        )
    return "\n".join(lines)
