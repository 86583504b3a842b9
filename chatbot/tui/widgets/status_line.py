"""The status line: which model runs where, how fast the last reply was, how full the context is."""

from textual.content import Content
from textual.reactive import reactive
from textual.widgets import Static

from chatbot.engines.base import EngineInfo, GenerationStats
from chatbot.store.records import TurnRecord

SEPARATOR = " │ "


def engine_text(info: EngineInfo) -> str:
    """Model, quantization, backend and threads, then the offload settings in effect."""
    threads = f" · {info.threads} thread{'s' if info.threads != 1 else ''}" if info.threads else ""
    settings = " ".join(f"{k}={v}" for k, v in info.settings.items())
    parts = (f"{info.model} · {info.quantization}", f"{info.backend}{threads}", settings)
    return SEPARATOR.join(part for part in parts if part)


def reply_text(stats: GenerationStats | TurnRecord | None, n_ctx: int | None) -> str:
    """Time to first token and decode speed of the last reply, and the context it used."""
    if stats is None:
        return "TTFT – · – tok/s"
    used = stats.prompt_tokens + stats.completion_tokens
    context = f"ctx {used}/{n_ctx} ({100 * used / n_ctx:.0f}%)" if n_ctx else f"ctx {used}"
    return f"TTFT {stats.ttft_ms:.0f} ms · {stats.decode_tps:.1f} tok/s{SEPARATOR}{context}"


class StatusLine(Static):
    """One line at the bottom; the app tells it the engine, the last reply and its state.

    The parts are reactive, so Textual repaints the line whenever one of them changes.
    """

    _engine: reactive[str] = reactive("")
    _stats: reactive[GenerationStats | TurnRecord | None] = reactive(None)
    _state: reactive[str] = reactive("Loading model…")
    _n_ctx: reactive[int | None] = reactive(None)

    def set_engine(self, info: EngineInfo) -> None:
        self._engine = engine_text(info)
        self._n_ctx = info.n_ctx

    def set_reply(self, stats: GenerationStats | TurnRecord | None) -> None:
        self._stats = stats

    def set_state(self, state: str) -> None:
        self._state = state

    @property
    def line(self) -> str:
        reply = reply_text(self._stats, self._n_ctx)
        return SEPARATOR.join(part for part in (self._state, reply, self._engine) if part)

    def render(self) -> Content:
        return Content(self.line)
