"""The remote engine: an OpenAI-compatible server (llama.cpp, llama-cpp-python, vLLM) over HTTP.

Replies stream as server-sent events from /v1/chat/completions; time to first token is measured
here, on the client, so the latency log means the same as with the embedded engine. Every
failure (server down, timeout, HTTP error, a reply that is not what the API says) becomes one
EngineError whose message says what happened and what to check. Nothing touches the network
before the first request, so a server that is down fails the turn after Session has saved the
user's message.

The environment's proxy settings are ignored (a customer's message must not go to a proxy
nobody chose); a proxy is used only when given. An API key goes in the Authorization header and
nowhere else; credentials in a URL are hidden (chatbot.engines.urls) in every text shown.
"""

import contextlib
import string
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from chatbot.engines import remote_wire as wire
from chatbot.engines.base import (
    ChatMessage,
    EngineInfo,
    GenerationOptions,
    GenerationStats,
    TextChunk,
    token_timing,
)
from chatbot.engines.urls import redact, split_credentials
from chatbot.errors import EngineError

DEFAULT_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0
# Used when the server does not say its context size (llama-cpp-python's server default).
DEFAULT_N_CTX = 2048
# Chat-template tokens around each message when counting by text (ChatML adds about 5).
MESSAGE_OVERHEAD_TOKENS = 6
CHARS_PER_TOKEN = 3  # the last-resort estimate, on the safe (high) side for English text
# Not CHATBOT_API_KEY: that is the key `chatbot serve` asks of its own clients, which must never
# be forwarded to the server behind it.
API_KEY_ENV = "CHATBOT_SERVER_API_KEY"
_KEY_CHARS = frozenset(string.ascii_letters + string.digits + string.punctuation)


class RemoteEngine:
    """Engine over an OpenAI-compatible HTTP endpoint with streaming."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        *,
        n_ctx: int | None = None,
        api_key: str | None = None,
        proxy: str | None = None,
    ):
        url = base_url.strip().rstrip("/").removesuffix("/v1")
        self.base_url = redact(url)  # what every message and the status line show
        self.proxy = redact(proxy) if proxy else None
        self.timeout = timeout
        self._model = model
        self._n_ctx = n_ctx
        self._info: EngineInfo | None = None
        self._listing_error: EngineError | None = None
        self._counts: dict[tuple[str, str], int] = {}
        self._tokenizer: str | None = None  # the tokenize endpoint that worked, "" if none
        self._has_key = bool(api_key)
        self._client = self._new_client(url, api_key, proxy)

    def _new_client(self, url: str, api_key: str | None, proxy: str | None) -> httpx.Client:
        """The HTTP client: never the environment's proxy; the key or the URL's user as auth."""
        headers = {"Authorization": f"Bearer {_checked_key(api_key)}"} if api_key else {}
        try:
            bare, credentials = split_credentials(url)
            auth = httpx.BasicAuth(*credentials) if credentials and not api_key else None
            if proxy:
                httpx.Proxy(proxy)  # a bad proxy URL is reported as the proxy's, below
        except (httpx.InvalidURL, ValueError) as exc:
            what = "proxy URL" if proxy and "proxy" in str(exc).lower() else "server URL"
            shown = self.proxy if what == "proxy URL" else self.base_url
            raise EngineError(f"invalid {what} {shown!r}; use http://HOST:PORT") from None
        try:
            return httpx.Client(
                base_url=bare,
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, CONNECT_TIMEOUT_S)),
                headers=headers,
                auth=auth,
                proxy=proxy or None,
                trust_env=False,
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise EngineError(
                f"invalid server URL {self.base_url!r}: {redact(str(exc))}; use http://HOST:PORT"
            ) from None

    @property
    def info(self) -> EngineInfo:
        """Model id and context from /v1/models when the server answers, else the given ones."""
        if self._info is not None:
            return self._info
        listed = self._listed_model()
        settings: dict[str, object] = {"server": self.base_url}
        if self.proxy:
            settings["proxy"] = self.proxy
        info = EngineInfo(
            model=self._model or (listed or {}).get("id") or "remote",
            quantization="remote",
            n_ctx=self._n_ctx or _context_of(listed) or DEFAULT_N_CTX,
            threads=0,
            backend=f"remote {self.base_url}",
            settings=settings,
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
        if self._listing_error is not None and self._info is None:
            raise self._listing_error  # kept until now, so the user's message was saved
        start = time.perf_counter()
        first: float | None = None
        pieces = 0
        end_of_reply = wire.ReplyEnd()
        with (
            self._http_errors("chat completion"),
            self._client.stream("POST", "/v1/chat/completions", json=body) as response,
        ):
            self._check_status(response)
            for event in wire.events(response, self.base_url):
                end_of_reply.update(event, self.base_url)
                for text in wire.texts(event, self.base_url):
                    first = first or time.perf_counter()
                    pieces += 1
                    yield TextChunk(text)
                if should_stop():
                    end_of_reply.finish_reason = "cancelled"
                    break
        end = time.perf_counter()
        if end_of_reply.finish_reason is None:  # every server ends a whole reply with one
            raise EngineError(
                f"{self.base_url} ended the reply stream before the reply was complete"
            )
        yield self._stats(messages, end_of_reply, pieces, (start, first, end))

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
        end_of_reply: wire.ReplyEnd,
        pieces: int,
        stamps: tuple[float, float | None, float],
    ) -> GenerationStats:
        """The reply's stats: the server's token counts where it sent them, else ours."""
        start, first, end = stamps
        completion = end_of_reply.completion_tokens or pieces
        prompt = end_of_reply.prompt_tokens
        reason = end_of_reply.finish_reason
        ttft_ms, decode_tps = token_timing(start, first, end, completion)
        return GenerationStats(
            prompt_tokens=prompt if prompt is not None else self.count_tokens(messages),
            cached_tokens=end_of_reply.cached_tokens or 0,
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
            with self._http_errors("token count"):
                response = self._client.post(path, json=_TOKENIZERS[path](text, self.info.model))
            if response.status_code in (404, 405, 422, 400):
                continue
            self._check_status(response)
            count = wire.token_count(response, self.base_url, path)
            self._tokenizer = path
            return count
        self._tokenizer = ""
        return len(text) // CHARS_PER_TOKEN + 1

    def _listed_model(self) -> dict[str, Any] | None:
        """The first model /v1/models lists (or the one asked for); None if there is none.

        A server without the list (no answer, an HTTP error) is left for the first real
        request to report; a list that is not one is kept as the error that request raises.
        """
        self._listing_error = None
        try:
            response = self._client.get("/v1/models", timeout=min(self.timeout, 5.0))
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        try:
            models = wire.listed_models(response, self.base_url)
        except EngineError as exc:
            self._listing_error = exc
            return None
        wanted = [m for m in models if m["id"] == self._model]
        return (wanted or models or [None])[0]

    def _check_status(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        response.read()
        via = f" (through the proxy {self.proxy})" if self.proxy else ""
        hint = ""
        if response.status_code in (401, 403):
            hint = (
                "; check the API key"
                if self._has_key
                else f"; the server may need an API key: set {API_KEY_ENV} or pass --server-api-key"
            )
        raise EngineError(
            f"{self.base_url}{via} answered HTTP {response.status_code}: "
            f"{_error_detail(response)}{hint}"
        )

    @contextlib.contextmanager
    def _http_errors(self, what: str) -> Iterator[None]:
        """Turns httpx's exceptions into one EngineError that says what to check."""
        try:
            yield
        except httpx.HTTPError as exc:
            raise EngineError(
                redact(_http_message(exc, self.base_url, self.proxy, what, self.timeout))
            ) from None


def _http_message(
    exc: httpx.HTTPError, url: str, proxy: str | None, what: str, timeout: float
) -> str:
    """What went wrong with a request, and what to check."""
    if isinstance(exc, httpx.ProxyError):
        return f"cannot reach {url} through the proxy {proxy}: {exc}; is the proxy right?"
    if isinstance(exc, httpx.ConnectTimeout):
        return f"cannot reach {url}: no answer within {timeout:g}s; is the address right?"
    if isinstance(exc, httpx.ConnectError):
        reason = "connection refused" if "refused" in str(exc).lower() else str(exc)
        where = f" through the proxy {proxy}" if proxy else ""
        return f"cannot reach {url}{where}: {reason}; is the server running?"
    if isinstance(exc, httpx.TimeoutException):
        return (
            f"{url} did not answer the {what} within {timeout:g}s; the server may be "
            "overloaded (raise the timeout or try again)"
        )
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"{url} closed the connection during the {what}: {exc}"
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return f"invalid server URL {url}: {exc}; use http://HOST:PORT"
    return f"{what} with {url} failed: {exc or type(exc).__name__}"


def _checked_key(key: str) -> str:
    """The API key if it can go in a header; the error never shows it."""
    if not set(key) <= _KEY_CHARS:
        raise EngineError(
            f"the API key (--server-api-key or {API_KEY_ENV}) has spaces, control characters or "
            "non-ASCII characters; give the key exactly as the server's operator issued it"
        )
    return key


def _context_of(model: dict[str, Any] | None) -> int | None:
    """vLLM lists the context as max_model_len; llama.cpp's servers do not list it."""
    value = (model or {}).get("max_model_len")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return wire.plain(response.text) or response.reason_phrase
    return wire.message_of(body.get("error") or body if isinstance(body, dict) else body)


# Tokenize endpoints, tried in order: llama.cpp's and vLLM's /tokenize, llama-cpp-python's.
_TOKENIZERS: dict[str, Callable[[str, str], dict[str, Any]]] = {
    "/tokenize": lambda text, model: {"content": text, "prompt": text, "model": model},
    "/extras/tokenize/count": lambda text, model: {"input": text, "model": model},
}
