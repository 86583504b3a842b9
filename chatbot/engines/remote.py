"""The remote engine: an OpenAI-compatible server (llama.cpp, llama-cpp-python, vLLM) over HTTP.

Replies stream as server-sent events from /v1/chat/completions; time to first token is measured
here, on the client, so the latency log means the same as with the embedded engine. Every
failure (server down, timeout, HTTP error, a stream that is not one) becomes one EngineError
whose message says what happened and what to check. Nothing touches the network before the first
request, so a server that is down fails the turn after Session has saved the user's message.
"""

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from chatbot.engines.base import (
    ChatMessage,
    EngineInfo,
    GenerationOptions,
    GenerationStats,
    TextChunk,
    token_timing,
)
from chatbot.errors import EngineError

DEFAULT_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0
# Used when the server does not say its context size (llama-cpp-python's server default).
DEFAULT_N_CTX = 2048
# Chat-template tokens around each message when counting by text (ChatML adds about 5).
MESSAGE_OVERHEAD_TOKENS = 6
CHARS_PER_TOKEN = 3  # the last-resort estimate, on the safe (high) side for English text
_ERROR_BODY_CHARS = 200


class RemoteEngine:
    """Engine over an OpenAI-compatible HTTP endpoint with streaming."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        *,
        n_ctx: int | None = None,
    ):
        url = base_url.strip().rstrip("/")
        self.base_url = url.removesuffix("/v1")
        self.timeout = timeout
        self._model = model
        self._n_ctx = n_ctx
        self._info: EngineInfo | None = None
        self._counts: dict[tuple[str, str], int] = {}
        self._tokenizer: str | None = None  # the tokenize endpoint that worked, "" if none
        try:
            self._client = httpx.Client(
                base_url=self.base_url,
                timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S)),
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise EngineError(
                f"invalid server URL {base_url!r}: {exc}; use http://HOST:PORT"
            ) from exc

    @property
    def info(self) -> EngineInfo:
        """Model id and context from /v1/models when the server answers, else the given ones."""
        if self._info is not None:
            return self._info
        listed = self._listed_model()
        info = EngineInfo(
            model=self._model or (listed or {}).get("id") or "remote",
            quantization="remote",
            n_ctx=self._n_ctx or _context_of(listed) or DEFAULT_N_CTX,
            threads=0,
            backend=f"remote {self.base_url}",
            settings={"server": self.base_url},
        )
        if listed is not None or (self._model and self._n_ctx):
            self._info = info  # otherwise ask again once the server answers
        return info

    def stream(
        self,
        messages: list[ChatMessage],
        options: GenerationOptions,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[TextChunk | GenerationStats]:
        body: dict[str, Any] = {
            "model": self.info.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "top_p": options.top_p,
            "repeat_penalty": 1.0,  # OpenAI semantics (no penalty); llama-cpp-python's is 1.1
        }
        if options.seed is not None:
            body["seed"] = options.seed
        start = time.perf_counter()
        first: float | None = None
        pieces = 0
        final: dict[str, Any] = {}
        with (
            _http_errors(self.base_url, "chat completion", self.timeout),
            self._client.stream("POST", "/v1/chat/completions", json=body) as response,
        ):
            self._check_status(response)
            for event in _events(response, self.base_url):
                final.update(_final_fields(event))
                for text in _texts(event):
                    first = first or time.perf_counter()
                    pieces += 1
                    yield TextChunk(text)
                if should_stop():
                    final["finish_reason"] = "cancelled"
                    break
        end = time.perf_counter()
        if "finish_reason" not in final:  # every server ends a whole reply with one
            raise EngineError(
                f"{self.base_url} ended the reply stream before the reply was complete"
            )
        yield self._stats(messages, final, pieces, start, first, end)

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        """Tokens of each message's text (from the server's tokenizer) plus template overhead.

        The chat template is not known here, so each message adds a fixed overhead; counts are
        cached per message, so fitting a growing history asks the server about new text only.
        """
        total = MESSAGE_OVERHEAD_TOKENS  # the generation prompt
        for message in messages:
            key = (message["role"], message["content"])
            if key not in self._counts:
                self._counts[key] = self._count_text(message["content"])
            total += self._counts[key] + MESSAGE_OVERHEAD_TOKENS
        return total

    def close(self) -> None:
        self._client.close()

    def _stats(
        self,
        messages: list[ChatMessage],
        final: dict[str, Any],
        pieces: int,
        start: float,
        first: float | None,
        end: float,
    ) -> GenerationStats:
        usage = final.get("usage") or {}
        completion = int(usage.get("completion_tokens") or pieces)
        prompt = usage.get("prompt_tokens")
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        if cached is None:
            cached = (final.get("timings") or {}).get("cache_n", 0)  # llama.cpp's server
        reason = final.get("finish_reason") or "stop"
        ttft_ms, decode_tps = token_timing(start, first, end, completion)
        return GenerationStats(
            prompt_tokens=int(prompt) if prompt is not None else self.count_tokens(messages),
            cached_tokens=int(cached or 0),
            completion_tokens=completion,
            ttft_ms=ttft_ms,
            decode_tps=decode_tps,
            total_ms=(end - start) * 1000,
            stop_reason=reason if reason in ("length", "cancelled") else "stop",
        )

    def _count_text(self, text: str) -> int:
        """Token count from the server's tokenize endpoint; an estimate if it has none."""
        if self._tokenizer == "":
            return len(text) // CHARS_PER_TOKEN + 1
        for path in [self._tokenizer] if self._tokenizer else list(_TOKENIZERS):
            with _http_errors(self.base_url, "token count", self.timeout):
                response = self._client.post(path, json=_TOKENIZERS[path](text, self.info.model))
            if response.status_code in (404, 405, 422, 400):
                continue
            self._check_status(response)
            try:
                data = response.json()
                count = int(data["count"]) if "count" in data else len(data["tokens"])
            except (ValueError, KeyError, TypeError) as exc:
                raise EngineError(
                    f"{self.base_url}{path} answered something that is not a token count"
                ) from exc
            self._tokenizer = path
            return count
        self._tokenizer = ""
        return len(text) // CHARS_PER_TOKEN + 1

    def _listed_model(self) -> dict[str, Any] | None:
        """The first model /v1/models lists (or the one asked for); None if that fails."""
        try:
            response = self._client.get("/v1/models", timeout=min(self.timeout, 5.0))
            models = response.json().get("data") or [] if response.status_code == 200 else []
        except (httpx.HTTPError, ValueError, AttributeError):
            return None  # the first real request reports the problem
        wanted = [m for m in models if isinstance(m, dict) and m.get("id") == self._model]
        return (wanted or [m for m in models if isinstance(m, dict)] or [None])[0]

    def _check_status(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        response.read()
        raise EngineError(
            f"{self.base_url} answered HTTP {response.status_code}: {_error_detail(response)}"
        )


@contextlib.contextmanager
def _http_errors(url: str, what: str, timeout: float) -> Iterator[None]:
    """Turns httpx's exceptions into one EngineError that says what to check."""
    try:
        yield
    except httpx.ConnectTimeout as exc:
        raise EngineError(
            f"cannot reach {url}: no answer within {timeout:g}s; is the address right?"
        ) from exc
    except httpx.ConnectError as exc:
        reason = "connection refused" if "refused" in str(exc).lower() else str(exc)
        raise EngineError(f"cannot reach {url}: {reason}; is the server running?") from exc
    except httpx.TimeoutException as exc:
        raise EngineError(
            f"{url} did not answer the {what} within {timeout:g}s; the server may be "
            "overloaded (raise the timeout or try again)"
        ) from exc
    except httpx.RemoteProtocolError as exc:
        raise EngineError(f"{url} closed the connection during the {what}: {exc}") from exc
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise EngineError(f"invalid server URL {url}: {exc}; use http://HOST:PORT") from exc
    except httpx.HTTPError as exc:
        raise EngineError(f"{what} with {url} failed: {exc}") from exc


def _events(response: httpx.Response, base_url: str) -> Iterator[dict[str, Any]]:
    """The JSON events of an SSE stream until [DONE]; EngineError if it is not one."""
    done = False
    seen = 0
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, ": ping" comments, "event:" names
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
            break
        try:
            event = json.loads(data)
        except ValueError:
            raise EngineError(f"{base_url} sent a malformed event stream: {data[:80]!r}") from None
        if not isinstance(event, dict):
            raise EngineError(f"{base_url} sent a malformed event stream: {data[:80]!r}")
        if "error" in event:
            raise EngineError(f"{base_url} reported an error: {_message_of(event['error'])}")
        seen += 1
        yield event
    if not done and not seen:
        raise EngineError(
            f"{base_url} did not answer with an OpenAI-compatible event stream; "
            "is it a /v1/chat/completions server?"
        )


def _texts(event: dict[str, Any]) -> Iterator[str]:
    for choice in event.get("choices") or []:
        text = (choice.get("delta") or {}).get("content") if isinstance(choice, dict) else None
        if text:
            yield text


def _final_fields(event: dict[str, Any]) -> dict[str, Any]:
    """Usage, llama.cpp's timings and the finish reason, whichever this event carries."""
    found: dict[str, Any] = {k: event[k] for k in ("usage", "timings") if event.get(k)}
    for choice in event.get("choices") or []:
        if isinstance(choice, dict) and choice.get("finish_reason"):
            found["finish_reason"] = choice["finish_reason"]
    return found


def _context_of(model: dict[str, Any] | None) -> int | None:
    """vLLM lists the context as max_model_len; llama.cpp's servers do not list it."""
    value = (model or {}).get("max_model_len")
    return int(value) if isinstance(value, int) and value > 0 else None


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
        return _message_of(body.get("error") or body)
    except (ValueError, AttributeError):
        text = " ".join(response.text.split())
        return text[:_ERROR_BODY_CHARS] or response.reason_phrase


def _message_of(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error.get("detail") or error)[:_ERROR_BODY_CHARS]
    return str(error)[:_ERROR_BODY_CHARS]


# Tokenize endpoints, tried in order: llama.cpp's and vLLM's /tokenize, llama-cpp-python's.
_TOKENIZERS: dict[str, Callable[[str, str], dict[str, Any]]] = {
    "/tokenize": lambda text, model: {"content": text, "prompt": text, "model": model},
    "/extras/tokenize/count": lambda text, model: {"input": text, "model": model},
}
