"""Thread counts for llama.cpp that follow the machine's load.

llama.cpp's worker threads spin while they wait for each other, so one thread more than the
cores that are free costs far more than one thread fewer: on 2 cores with one other busy
process, SmolLM2 decoded 27 tok/s on 2 threads and 53 on 1 (idle: 90 and 56). The right count
changes while the app runs, so it is measured, not configured: start from the cores idle now,
then while decoding try one thread fewer or more now and then (`llama_set_n_threads` changes it
on a live context: no reload, KV cache kept) and keep whichever is faster. Prompt processing
(`n_threads_batch`) is tuned the same way, measured on prompt evaluation.

Probing is cheap because it is rare and short: a probe is one window of a few tokens, and each
probe that loses doubles the wait before the next; a sudden slowdown (another program started)
brings the next probe forward. A probe must win by a margin to be kept (hysteresis).
"""

import os
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import llama_cpp
import psutil

IDLE_SAMPLE_S = 0.1  # one per-CPU utilisation sample: 10 scheduler ticks, about 10 % resolution


@dataclass(frozen=True)
class Tuning:
    """How the tuner searches; the defaults cost about 1 % of decode speed on an idle machine.

    `start` and `max_threads` exist for tests and benches; None means what the machine says.
    """

    start: int | None = None  # threads to begin with; None: the cores idle now
    max_threads: int | None = None  # None: the cores this process may run on
    window: int = 8  # decode tokens per measurement (their median)
    probe_every: int = 96  # decode tokens between probes while the count is moving
    max_probe_every: int = 768  # each probe that loses doubles the wait, up to this
    margin: float = 0.05  # a probe must be this much faster per token to be kept
    slowdown: float = 1.3  # a window this much slower than before probes at once
    batch_probe_every: int = 4  # prompts between prompt-processing probes
    max_batch_probe_every: int = 32
    min_prompt: int = 32  # shorter prompts say too little about n_threads_batch
    clock: Callable[[], float] = time.perf_counter


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask), not every CPU of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def idle_cores(sample_s: float = IDLE_SAMPLE_S) -> int:
    """The usable CPUs that are idle now, from one short per-CPU utilisation sample (>= 1).

    Partly busy CPUs add up: two CPUs each half busy count as one idle core.
    """
    per_cpu = psutil.cpu_percent(interval=sample_s, percpu=True)
    if hasattr(os, "sched_getaffinity"):
        allowed = os.sched_getaffinity(0)
        per_cpu = [p for cpu, p in enumerate(per_cpu) if cpu in allowed] or per_cpu
    idle = sum(100.0 - p for p in per_cpu) / 100.0
    return max(1, min(usable_cores(), round(idle)))


def start_threads(tuning: Tuning) -> int:
    """The count to load a model with when the user fixed none."""
    return tuning.start if tuning.start is not None else idle_cores()


class _Climb:
    """One thread count (decode or prompt), searched by trying a neighbour now and then.

    Costs are seconds per token. A window of `window` costs gives one median; the median of
    the last three windows at the current count is the baseline a probe must beat.
    """

    def __init__(self, n: int, hi: int, window: int, every: int, max_every: int, tuning: Tuning):
        self.n, self.hi, self.window = n, hi, window
        self.every = self._base_every = every
        self._max_every = max_every
        self._margin, self._slowdown = tuning.margin, tuning.slowdown
        self._samples: list[float] = []
        self._recent: deque[float] = deque(maxlen=3)  # window medians at the current count
        self._reference: float | None = None  # the baseline at the last decision
        self._since = 0  # costs recorded since the last probe was decided
        self.probe: int | None = None  # the neighbour being measured, if any
        self._direction = -1  # fewer threads first: too many is the costly mistake
        self.probes = 0

    @property
    def threads(self) -> int:
        """The count to use now: the probe while one runs."""
        return self.probe if self.probe is not None else self.n

    def record(self, cost: float) -> None:
        self._samples.append(cost)
        if self.probe is not None and self._clearly_losing():
            self._samples.clear()
            self._lose()
            return
        if len(self._samples) < self.window:
            return
        median = statistics.median(self._samples)
        self._samples.clear()
        if self.probe is None:
            self._at_current(median)
        elif median < statistics.median(self._recent) * (1 - self._margin):
            self._keep(median)
        else:
            self._lose()

    def _clearly_losing(self) -> bool:
        """Half a window, every cost of it slower than the baseline: stop the probe early."""
        if len(self._samples) < max(2, self.window // 2):
            return False
        return min(self._samples) > statistics.median(self._recent) * (1 + self._margin)

    def _at_current(self, median: float) -> None:
        self._since += self.window
        if self._reference is None:
            self._reference = median  # the first window: a later slowdown is measured from it
        slowed = median > self._reference * self._slowdown
        if slowed:  # the load changed: older windows no longer describe this count
            self._recent.clear()
            self.every = self._base_every
        self._recent.append(median)
        if slowed or self._since >= self.every:
            self.probe = self._neighbour()
            self._since = 0
            self.probes += self.probe is not None

    def _keep(self, median: float) -> None:
        """The probe won: switch to it, and try the same way again soon."""
        self.n, self.probe = self.probe, None
        self._recent.clear()
        self._recent.append(median)
        self._reference = median
        self.every = self._base_every

    def _lose(self) -> None:
        """The probe lost: back to the count, the other way next time, and wait twice as long."""
        self.probe = None
        self._reference = statistics.median(self._recent)
        self._direction = -self._direction
        self.every = min(self.every * 2, self._max_every)

    def _neighbour(self) -> int | None:
        for direction in (self._direction, -self._direction):
            if 1 <= self.n + direction <= self.hi:
                self._direction = direction
                return self.n + direction
        return None


class ThreadTuner:
    """Keeps a llama.cpp context on the fastest thread counts, or on fixed ones.

    The engine wraps each reply's token stream in `timed`, which times every step of the
    stream: the first step is prompt evaluation (tunes `n_threads_batch`), each later one
    decodes one token (tunes `n_threads`).
    """

    def __init__(
        self, ctx: object, threads: int, *, fixed: bool = False, tuning: Tuning | None = None
    ):
        self.ctx = ctx
        self.tuning = tuning = tuning or Tuning()
        self.fixed = fixed
        hi = max(threads, tuning.max_threads or usable_cores())
        self.decode = _Climb(
            threads, hi, tuning.window, tuning.probe_every, tuning.max_probe_every, tuning
        )
        self.batch = _Climb(
            threads, hi, 1, tuning.batch_probe_every, tuning.max_batch_probe_every, tuning
        )
        self._applied: tuple[int, int] | None = None
        self._turn: Counter[int] = Counter()
        self._apply()

    @property
    def threads(self) -> int:
        """The decode thread count in effect now."""
        return self.decode.threads

    def timed(self, tokens: Iterable[int], prompt_tokens: int) -> Iterator[int]:
        """The tokens, each step timed; `prompt_tokens` is how many the first step evaluates."""
        self._turn.clear()
        stream = iter(tokens)
        clock = self.tuning.clock
        first = True
        try:
            while True:
                threads = self.decode.threads
                start = clock()
                try:
                    token = next(stream)
                except StopIteration:
                    return
                elapsed = clock() - start
                if first:
                    self._prompt_done(elapsed, prompt_tokens)
                    first = False
                else:
                    self._turn[threads] += 1
                    self._token_done(elapsed)
                yield token
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    def turn_threads(self) -> int:
        """The decode thread count of the last reply: the one used for most of its tokens.

        Most tokens, not the final count: a probe or a late switch says little about how the
        reply was made. With no decoded token, the count in effect now.
        """
        if not self._turn:
            return self.decode.threads
        return self._turn.most_common(1)[0][0]

    def _prompt_done(self, elapsed: float, prompt_tokens: int) -> None:
        if self.fixed or prompt_tokens < self.tuning.min_prompt:
            return
        self.batch.record(elapsed / prompt_tokens)
        self._apply()

    def _token_done(self, elapsed: float) -> None:
        if self.fixed:
            return
        self.decode.record(elapsed)
        self._apply()

    def _apply(self) -> None:
        wanted = (self.decode.threads, self.batch.threads)
        if wanted != self._applied:
            llama_cpp.llama_set_n_threads(self.ctx, *wanted)
            self._applied = wanted
