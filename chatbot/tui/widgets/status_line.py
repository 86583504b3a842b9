"""The status line: the app's state (with live figures while a reply streams), the mode, the
model, how fast the last reply was, how full the context is, and where the model runs.

The line fits its width by dropping its least useful parts first (offload settings, backend,
quantization, context, the last reply's speed), never the state, the mode or the model.
"""

import time
from dataclasses import dataclass, field

from textual.content import Content
from textual.reactive import reactive
from textual.widgets import Static

from chatbot.engines.base import EngineInfo, GenerationStats
from chatbot.store.records import TurnRecord

SEPARATOR = " │ "
LIVE_REFRESH_S = 0.25


@dataclass
class ReplyProgress:
    """The reply being written, counted by the reply worker's thread and read by the UI."""

    started: float = field(default_factory=time.perf_counter)
    first: float | None = None  # when the first piece came
    tokens: int = 0  # pieces so far: one token each from the embedded engine

    def add(self) -> None:
        now = time.perf_counter()
        self.first = self.first or now
        self.tokens += 1

    def text(self, now: float | None = None) -> str:
        """Tokens so far, tokens/s since the first, seconds since the reply started."""
        now = time.perf_counter() if now is None else now
        decoding = now - self.first if self.first is not None else 0.0
        tps = (self.tokens - 1) / decoding if self.tokens > 1 and decoding > 0 else 0.0
        return f"{self.tokens} tok · {tps:.1f} tok/s · {now - self.started:.1f} s"


@dataclass(frozen=True)
class Part:
    """A piece of the line; the lowest `keep` goes first when the line is too long."""

    text: str
    keep: int


def fit(parts: list[Part], width: int) -> str:
    """The parts joined, leaving out the least useful until the line fits `width`."""
    parts = [part for part in parts if part.text]
    while len(parts) > 1 and len(SEPARATOR.join(p.text for p in parts)) > width:
        parts.remove(min(parts, key=lambda part: part.keep))
    return SEPARATOR.join(part.text for part in parts)


def model_parts(info: EngineInfo) -> list[Part]:
    """Model (file name without .gguf), quantization, backend and threads, offload settings."""
    name = info.model.removesuffix(".gguf")
    quant = info.quantization if info.quantization not in name else ""
    threads = f" · {info.threads} thread{'s' if info.threads != 1 else ''}" if info.threads else ""
    settings = " ".join(f"{k}={v}" for k, v in info.settings.items())
    return [Part(name, 80), Part(quant, 40), Part(info.backend + threads, 30), Part(settings, 20)]


def reply_parts(stats: GenerationStats | TurnRecord | None, n_ctx: int | None) -> list[Part]:
    """Time to first token and decode speed of the last reply, and the context it used."""
    if stats is None:
        return [Part("TTFT – · – tok/s", 60)]
    used = stats.prompt_tokens + stats.completion_tokens
    context = f"ctx {used}/{n_ctx} ({100 * used / n_ctx:.0f}%)" if n_ctx else f"ctx {used}"
    speed = f"TTFT {stats.ttft_ms:.0f} ms · {stats.decode_tps:.1f} tok/s"
    return [Part(speed, 60), Part(context, 50)]


class StatusLine(Static):
    """One line at the bottom; the app tells it the engine, the mode, the last reply, its state,
    and the reply being written (then it repaints itself a few times a second)."""

    _info: reactive[EngineInfo | None] = reactive(None)
    _stats: reactive[GenerationStats | TurnRecord | None] = reactive(None)
    _state: reactive[str] = reactive("Loading model…")
    _mode: reactive[str] = reactive("chat")
    _progress: ReplyProgress | None = None

    def set_engine(self, info: EngineInfo | None) -> None:
        self._info = info

    def set_mode(self, mode: str) -> None:
        self._mode = mode

    def set_reply(self, stats: GenerationStats | TurnRecord | None) -> None:
        """The last reply's figures; ends the live figures of a reply being written."""
        self._progress = None
        self.auto_refresh = None
        self._stats = stats

    @property
    def last_stats(self) -> GenerationStats | TurnRecord | None:
        return self._stats

    def start_reply(self, progress: ReplyProgress) -> None:
        """Show the reply's live figures until `set_reply`."""
        self._progress = progress
        self.auto_refresh = LIVE_REFRESH_S
        self.refresh()

    def set_state(self, state: str) -> None:
        self._state = state

    def parts(self) -> list[Part]:
        state = self._state
        if self._progress is not None:
            state = f"{state} {self._progress.text()}"
        parts = [Part(state, 100), Part(self._mode, 90)]
        if self._info is not None:
            model, *where = model_parts(self._info)
            parts.append(model)
        else:
            where = []
        if self._progress is None:
            parts += reply_parts(self._stats, self._info.n_ctx if self._info else None)
        return parts + where

    @property
    def line(self) -> str:
        """The line as shown: fitted to the widget's width once it has one."""
        width = self.content_size.width
        return fit(self.parts(), width if width > 0 else 10_000)

    def render(self) -> Content:
        return Content(self.line)
