"""Thread counts for llama.cpp that follow the machine's load.

llama.cpp's worker threads spin while they wait for each other, so one thread more than the
cores that are free costs far more than one thread fewer: on 2 cores with one other busy
process, SmolLM2 decoded 27 tok/s on 2 threads and 53 on 1 (idle: 90 and 56). The right count
changes while the app runs, so it is measured, not configured: start from the cores idle now,
then while decoding try one thread fewer or more now and then (`llama_set_n_threads` changes it
on a live context: no reload, KV cache kept) and keep whichever is faster. Prompt processing
(`n_threads_batch`) is tuned the same way, measured on prompt evaluation.

Probing is cheap because it is rare and short: a probe is one window of a few tokens, ended
after one token when that token is far slower, and each probe that loses doubles the wait
before the next (1 % of decode speed on an idle machine, tests/chatbot/test_threads.py). A
probe must win by a margin to be kept (hysteresis). A sudden slowdown (another program
started) brings a probe of one fewer forward; one thread more is tried only when the OS says
other programs leave a core free for it, since on a taken core a token can take 10x longer.
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

    `start`, `max_threads` and `free_cores` exist for tests and benches; None: ask the machine.
    """

    start: int | None = None  # threads to begin with; None: the cores idle now
    max_threads: int | None = None  # None: the cores this process may run on
    window: int = 8  # decode tokens per measurement (their median)
    probe_every: int = 96  # decode tokens between probes while the count is moving
    max_probe_every: int = 768  # each probe that loses doubles the wait, up to this
    margin: float = 0.05  # a probe must be this much faster per token to be kept
    give_up: float = 1.5  # one probe token this much slower than the baseline ends the probe
    shift: float = 1.3  # a window this much slower (faster) than before: the load changed
    batch_probe_every: int = 4  # prompts between prompt-processing probes
    max_batch_probe_every: int = 32
    min_prompt: int = 32  # shorter prompts say too little about n_threads_batch
    clock: Callable[[], float] = time.perf_counter
    free_cores: Callable[[], float] | None = None  # None: FreeCores, from the OS


def _allowed_cpus() -> list[int] | None:
    """The CPU ids this process may run on; None where the OS does not say."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask), not every CPU of the machine."""
    allowed = _allowed_cpus()
    return max(1, len(allowed)) if allowed is not None else os.cpu_count() or 1


def idle_cores(sample_s: float = IDLE_SAMPLE_S) -> int:
    """The usable CPUs that are idle now, from one short per-CPU utilisation sample (>= 1).

    Partly busy CPUs add up: two CPUs each half busy count as one idle core.
    """
    per_cpu = psutil.cpu_percent(interval=sample_s, percpu=True)
    allowed = _allowed_cpus()
    if allowed is not None:
        per_cpu = [p for cpu, p in enumerate(per_cpu) if cpu in allowed] or per_cpu
    idle = sum(100.0 - p for p in per_cpu) / 100.0
    return max(1, min(usable_cores(), round(idle)))


def start_threads(tuning: Tuning) -> int:
    """The count to load a model with when the user fixed none."""
    return tuning.start if tuning.start is not None else idle_cores()


class FreeCores:
    """Cores that other processes leave free, averaged since the previous call (non-blocking).

    A probe of one thread more is only worth trying when a core is free for it: on a core that
    another program keeps busy, one token can take ten times longer. Our own threads are not
    "others": their CPU time is taken out.
    """

    MIN_INTERVAL_S = 0.25  # shorter: too few scheduler ticks; the previous answer stands

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._cpus = _allowed_cpus()
        self._last = self._sample()
        self._free = float(usable_cores())

    def _sample(self) -> tuple[float, float, float]:
        """Busy CPU seconds of the usable CPUs, this process's CPU seconds, wall seconds."""
        per_cpu = psutil.cpu_times(percpu=True)
        if self._cpus is not None:
            per_cpu = [per_cpu[c] for c in self._cpus if c < len(per_cpu)] or per_cpu
        busy = 0.0
        for t in per_cpu:  # as psutil.cpu_percent counts: guest time is already in user
            total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
            busy += total - t.idle - getattr(t, "iowait", 0.0)
        own = self._process.cpu_times()
        return busy, own.user + own.system, time.monotonic()

    def __call__(self) -> float:
        now = self._sample()
        busy, own, wall = (a - b for a, b in zip(now, self._last, strict=True))
        if wall >= self.MIN_INTERVAL_S:
            self._last = now
            self._free = max(0.0, usable_cores() - max(0.0, (busy - own) / wall))
        return self._free


class _Climb:
    """One thread count (decode or prompt), searched by trying a neighbour now and then.

    Costs are seconds per token. A window of `window` costs gives one median; the median of
    the last three windows at the current count is the baseline a probe must beat. A probe of
    one thread more is tried only when `room(n + 1)` says the cores are free for it.
    """

    def __init__(
        self,
        n: int,
        hi: int,
        every: tuple[int, int],
        tuning: Tuning,
        room: Callable[[int], bool],
        window: int,
    ):
        self.n, self.hi, self.window, self._room = n, hi, window, room
        self._base_every, self._max_every = every
        self.every = self._base_every
        self._tuning = tuning
        self._samples: list[float] = []
        self._recent: deque[float] = deque(maxlen=3)  # window medians at the current count
        self._reference: float | None = None  # the level of the last decision or load change
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
        if self.probe is not None and self._losing(cost):
            self._samples.clear()
            self._lose()
            return
        if len(self._samples) < self.window:
            return
        median = statistics.median(self._samples)
        self._samples.clear()
        if self.probe is None:
            self._at_current(median)
        elif median < statistics.median(self._recent) * (1 - self._tuning.margin):
            self._keep(median)
        else:
            self._lose()

    def _losing(self, cost: float) -> bool:
        """Stop a probe early: one token far slower, or half a window all slower."""
        baseline = statistics.median(self._recent)
        if cost > baseline * self._tuning.give_up:
            return True
        half = len(self._samples) >= max(2, self.window // 2)
        return half and min(self._samples) > baseline * (1 + self._tuning.margin)

    def _at_current(self, median: float) -> None:
        self._since += self.window
        reference = self._reference if self._reference is not None else median
        shift = self._tuning.shift
        # The load changed: slower, fewer threads may win now; faster, more may fit.
        moved = -1 if median > reference * shift else 1 if median * shift < reference else 0
        if moved or self._reference is None:
            self._reference = median
        if moved:  # older windows no longer describe this count
            self._recent.clear()
            self.every = self._base_every
        self._recent.append(median)
        # Other programs leave no core for one of ours: one fewer, sooner than the schedule.
        crowded = self._since >= self.every // 4 and self.n > 1 and not self._room(self.n)
        if crowded and not moved:
            moved = -1
        if moved or self._since >= self.every:
            self.probe = self._neighbour(moved)
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

    def _neighbour(self, forced: int) -> int | None:
        """One thread fewer or more (`forced` direction when not 0); None when neither fits."""
        for direction in (forced,) if forced else (self._direction, -self._direction):
            candidate = self.n + direction
            if 1 <= candidate <= self.hi and (direction < 0 or self._room(candidate)):
                self._direction = direction
                return candidate
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
        free = tuning.free_cores or (FreeCores() if not fixed else lambda: float(hi))

        def room(wanted: int) -> bool:  # other processes leave a core for each thread
            return free() >= wanted - 0.5

        decode_every = (tuning.probe_every, tuning.max_probe_every)
        batch_every = (tuning.batch_probe_every, tuning.max_batch_probe_every)
        self.decode = _Climb(threads, hi, decode_every, tuning, room, window=tuning.window)
        self.batch = _Climb(threads, hi, batch_every, tuning, room, window=1)
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

    def step(self, elapsed: float, prompt_tokens: int = 0) -> None:
        """One llama_decode timed by an engine that drives the context itself (the batched
        engine): a step with prompt tokens tunes n_threads_batch, a decode step n_threads."""
        if prompt_tokens:
            self._prompt_done(elapsed, prompt_tokens)
        else:
            self._token_done(elapsed)

    def turn_threads(self) -> int:
        """The decode thread count of the last reply: the one used for most of its tokens.

        Most tokens, not the final count: a probe or a late switch says little about how the
        reply was made. With no decoded token, the count in effect now.
        """
        if not self._turn:
            return self.decode.threads
        return self._turn.most_common(1)[0][0]

    def turn_counts(self) -> dict[int, int]:
        """Tokens of the last reply decoded at each thread count (probes show here)."""
        return dict(self._turn)

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
