"""The OpenAI-compatible wire format, read without trusting the server to send it right.

Every event, usage block, model list and token count is checked here, field by field: whatever
a broken, different or hostile server sends becomes one EngineError that names the field, never
a TypeError traceback. Texts from the server are shown on one line without control characters.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from chatbot.errors import EngineError

_SHOWN_CHARS = 200  # of a server's error message or a malformed value


def plain(value: object, limit: int = _SHOWN_CHARS) -> str:
    """A server's text as one printable line (no newlines or terminal escapes), shortened."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(value))
    return " ".join(text.split())[:limit]


def malformed(url: str, what: str, value: object) -> EngineError:
    return EngineError(f"{url} sent a malformed reply: {what} is {plain(repr(value), 80)}")


@dataclass
class ReplyEnd:
    """What the events say about the whole reply; None where the server did not say."""

    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None

    def update(self, event: dict[str, Any], url: str) -> None:
        """Take the usage, llama.cpp's timings and the finish reason this event carries."""
        usage = _field(event, "usage", dict, url) or {}
        details = _field(usage, "prompt_tokens_details", dict, url, "usage.") or {}
        timings = _field(event, "timings", dict, url) or {}  # llama.cpp's server
        found = {
            "prompt_tokens": _count(usage, "prompt_tokens", url, "usage."),
            "completion_tokens": _count(usage, "completion_tokens", url, "usage."),
            "cached_tokens": _count(details, "cached_tokens", url, "usage.prompt_tokens_details.")
            if details
            else _count(timings, "cache_n", url, "timings."),
        }
        for name, value in found.items():
            if value is not None:
                setattr(self, name, value)
        for choice in _choices(event, url):
            reason = _field(choice, "finish_reason", str, url, "choices[].")
            if reason:
                self.finish_reason = reason


def events(response: httpx.Response, url: str) -> Iterator[dict[str, Any]]:
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
            raise EngineError(
                f"{url} sent a malformed event stream: {plain(repr(data), 80)}"
            ) from None
        if not isinstance(event, dict):
            raise EngineError(f"{url} sent a malformed event stream: {plain(repr(data), 80)}")
        if "error" in event:
            raise EngineError(f"{url} reported an error: {message_of(event['error'])}")
        seen += 1
        yield event
    if not done and not seen:
        raise EngineError(
            f"{url} did not answer with an OpenAI-compatible event stream; "
            "is it a /v1/chat/completions server?"
        )


def texts(event: dict[str, Any], url: str) -> Iterator[str]:
    """The reply text an event carries (choices[].delta.content)."""
    for choice in _choices(event, url):
        delta = _field(choice, "delta", dict, url, "choices[].") or {}
        text = _field(delta, "content", str, url, "choices[].delta.")
        if text:
            yield text


def listed_models(response: httpx.Response, url: str) -> list[dict[str, Any]]:
    """The models a 200 from /v1/models lists: those with a text id; EngineError if no list."""
    try:
        body = response.json()
    except ValueError:
        body = plain(response.text, 80)
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise EngineError(
            f"{url}/v1/models answered something that is not a model list "
            f"({plain(repr(data if isinstance(body, dict) else body), 80)}); "
            "is it an OpenAI-compatible server?"
        )
    return [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]


def token_count(response: httpx.Response, url: str, path: str) -> int:
    """The count a tokenize endpoint answered ({"count": N} or {"tokens": [...]})."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        if isinstance(data.get("tokens"), list) and "count" not in data:
            return len(data["tokens"])
        count = _count(data, "count", url, "")
        if count is not None:
            return count
    raise EngineError(f"{url}{path} answered something that is not a token count")


def message_of(error: Any) -> str:
    """The message of an OpenAI-style error object (or whatever the server sent instead)."""
    if isinstance(error, dict):
        return plain(error.get("message") or error.get("detail") or error)
    return plain(error)


def _choices(event: dict[str, Any], url: str) -> list[dict[str, Any]]:
    choices = _field(event, "choices", list, url) or []
    for choice in choices:
        if not isinstance(choice, dict):
            raise malformed(url, "a choice", choice)
    return choices


def _field(data: dict[str, Any], name: str, kind: type, url: str, prefix: str = "") -> Any:  # noqa: ANN401 (the checked value, of type `kind`)
    """data[name] if it is a `kind` (None if absent or null); EngineError otherwise."""
    value = data.get(name)
    if value is None or isinstance(value, kind):
        return value
    raise malformed(url, prefix + name, value)


def _count(data: dict[str, Any], name: str, url: str, prefix: str) -> int | None:
    """A token count: a whole number from 0, or None when absent."""
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise malformed(url, prefix + name, value)
    return value
