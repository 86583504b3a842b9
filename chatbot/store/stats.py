"""Per-model running cost from the latency log: percentiles of TTFT and tokens/s, CPU per tokens.

Pure computation over `TurnRecord`s the store has read; the SQL stays in chatbot.store.store.
"""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from chatbot.store.records import TurnRecord


@dataclass(frozen=True)
class ModelStats:
    """The running cost of one model, from the turns table."""

    model_file: str
    quantization: str
    turns: int
    ttft_p50_ms: float
    ttft_p95_ms: float
    tps_p50: float
    tps_p95: float
    cpu_seconds_per_1k_tokens: float
    # (thread count, turns) pairs, most turns first: the count is chosen per turn (adaptive).
    threads: tuple[tuple[int, int], ...] = ()


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def model_stats(turns: Iterable[TurnRecord]) -> list[ModelStats]:
    """Per model file: turn count, p50/p95 of TTFT and tokens/s, CPU s per 1,000 tokens."""
    by_model: dict[tuple[str, str], list[TurnRecord]] = {}
    for turn in turns:
        by_model.setdefault((turn.model_file, turn.quantization), []).append(turn)
    return [_one_model(key, group) for key, group in sorted(by_model.items())]


def _one_model(key: tuple[str, str], turns: list[TurnRecord]) -> ModelStats:
    # TTFT only where a token came; tokens/s only where there were two to time between.
    ttft = [t.ttft_ms for t in turns if t.completion_tokens > 0]
    tps = [t.decode_tps for t in turns if t.completion_tokens > 1]
    tokens = sum(t.completion_tokens for t in turns)
    cpu = sum(t.cpu_seconds for t in turns)
    return ModelStats(
        model_file=key[0],
        quantization=key[1],
        turns=len(turns),
        ttft_p50_ms=percentile(ttft, 50),
        ttft_p95_ms=percentile(ttft, 95),
        tps_p50=percentile(tps, 50),
        tps_p95=percentile(tps, 95),
        cpu_seconds_per_1k_tokens=cpu * 1000 / tokens if tokens else 0.0,
        threads=tuple(Counter(t.threads for t in turns).most_common()),
    )
