"""The one interface between the chat logic and whatever generates text.

The app, the session and the store never touch llama.cpp or HTTP: they hold an `Engine` and
iterate over `Engine.stream`. The embedded llama.cpp engine and the remote OpenAI-compatible
engine both implement it.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from chatbot.errors import EngineError

ChatMessage = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


# FAQ answers are sampled greedily: on the helpdesk questions SmolLM2 kept 63% of an article's
# key facts at temperature 0 against 36% at 0.7, and made one up in 10% of answers against 35%
# (bench/faq_bench.py measures at 0). Loops, greedy decoding's failure, are cut by the session.
FAQ_TEMPERATURE = 0.0


@dataclass(frozen=True)
class GenerationOptions:
    """Sampling settings for one reply."""

    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None


@dataclass(frozen=True)
class EngineInfo:
    """What the status line shows and the latency log records about the engine."""

    model: str  # model file name, or the remote model id
    quantization: str  # e.g. "Q4_K_M"; "remote" when unknown
    n_ctx: int  # context window in tokens
    threads: int  # CPU threads used for generation (0 when remote)
    backend: str  # e.g. "llama.cpp (CPU)", "llama.cpp (CUDA, 24/30 layers)", "remote http://..."
    settings: dict[str, object] = field(default_factory=dict)  # offload settings in effect


@dataclass(frozen=True)
class TextChunk:
    """A piece of the reply, in the order generated."""

    text: str


@dataclass(frozen=True)
class GenerationStats:
    """Measured on the generating side of one reply; the last item `Engine.stream` yields."""

    prompt_tokens: int
    cached_tokens: int  # prompt tokens reused from the KV cache, not evaluated again
    completion_tokens: int
    ttft_ms: float  # time to first token
    decode_tps: float  # completion tokens per second after the first token
    total_ms: float
    stop_reason: str  # "stop", "length", "cancelled", or "repetition" (set by the session)


def token_timing(
    start: float, first: float | None, last: float, tokens: int
) -> tuple[float, float]:
    """Time to first token (ms) and tokens/s after it, from `time.perf_counter` stamps.

    Shared by the engines so both measure `ttft_ms` and `decode_tps` by the same rule.
    """
    if first is None:
        return 0.0, 0.0
    decode_s = last - first
    tps = (tokens - 1) / decode_s if tokens > 1 and decode_s > 0 else 0.0
    return (first - start) * 1000, tps


class Engine(Protocol):
    """Generates a reply to a list of chat messages, one chunk at a time."""

    info: EngineInfo

    def stream(
        self,
        messages: list[ChatMessage],
        options: GenerationOptions,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[TextChunk | GenerationStats]:
        """Yield TextChunk items, then exactly one GenerationStats; stop early when asked."""
        ...

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        """Tokens the messages take once rendered with the chat template."""
        ...

    def close(self) -> None:
        """Free the model or connection."""
        ...


def room_for_reply(prompt_tokens: int, n_ctx: int) -> int:
    """Tokens left for the reply in a context of `n_ctx`, or EngineError when none are."""
    room = n_ctx - prompt_tokens
    if room <= 0:
        raise EngineError(
            f"the prompt takes {prompt_tokens} tokens and the context holds {n_ctx}; "
            "shorten the message or raise --ctx"
        )
    return room
