"""Turning a Session's TurnResult and saved messages into the API's response bodies."""

import logging
import time
from typing import Any

from chatbot.conversation.session import TurnResult
from chatbot.errors import ChatbotError, EngineError, KnowledgeBaseError, StoreError
from chatbot.serve.models import (
    ApiError,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    ClarifyChoice,
    Delta,
    FaqFields,
    History,
    HistoryMessage,
    OutMessage,
    Source,
    Usage,
)
from chatbot.serve.turns import Backend
from chatbot.store.records import Message

log = logging.getLogger("chatbot.serve")


def api_error_for(exc: Exception) -> ApiError:
    """The HTTP error a failed turn answers with; unexpected errors are logged, not shown."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, EngineError):
        return ApiError(502, f"the model failed: {exc}")
    if isinstance(exc, StoreError | KnowledgeBaseError):
        log.error("turn failed: %s", exc)
        return ApiError(500, "the server could not save or look up this turn; try again")
    if isinstance(exc, ChatbotError):
        return ApiError(400, str(exc))  # e.g. a message too long for the model's context
    log.error("turn failed", exc_info=exc)
    return ApiError(500, "internal error")


def sources(backend: Backend, ids: tuple[str, ...] | list[str]) -> list[Source]:
    """The cited FAQ entries, with their question and answer when the FAQ still has them."""
    found = []
    for faq_id in ids:
        entry = backend.faq_entry(faq_id) if backend.faq_entry else None
        question, answer = (entry.question, entry.answer) if entry else (None, None)
        found.append(Source(id=faq_id, question=question, answer=answer))
    return found


def _clarify(backend: Backend, ids: tuple[str, ...]) -> list[ClarifyChoice] | None:
    """An ask-back's choices, in the order the reply numbers them; None when it asked none."""
    entries = [(i, backend.faq_entry(i) if backend.faq_entry else None) for i in ids]
    return [ClarifyChoice(id=i, question=e.question if e else i) for i, e in entries] or None


def faq_fields(backend: Backend, result: TurnResult, token: str) -> FaqFields:
    return FaqFields(
        conversation_id=token,
        sources=sources(backend, result.sources),
        handoff=result.handoff,
        unsupported_facts=list(result.unsupported),
        clarify=_clarify(backend, tuple(choice.id for choice in result.clarify)),
    )


def _finish_reason(result: TurnResult) -> str:
    return "length" if result.stats and result.stats.stop_reason == "length" else "stop"


def _usage(result: TurnResult) -> Usage:
    prompt = result.stats.prompt_tokens if result.stats else 0
    completion = result.stats.completion_tokens if result.stats else 0
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def completion(
    backend: Backend, result: TurnResult, token: str, completion_id: str
) -> ChatCompletion:
    """The whole reply, for a request without stream."""
    return ChatCompletion(
        **faq_fields(backend, result, token).model_dump(),
        id=completion_id,
        created=int(time.time()),
        model=backend.engine.info.model,
        choices=[
            Choice(message=OutMessage(content=result.answer), finish_reason=_finish_reason(result))
        ],
        usage=_usage(result),
    )


def chunk(
    backend: Backend, token: str, completion_id: str, delta: Delta | None, **extra: Any
) -> ChatCompletionChunk:
    """One streamed event with this delta; `extra` sets finish_reason or the final fields."""
    finish = extra.pop("finish_reason", None)
    return ChatCompletionChunk(
        id=completion_id,
        created=int(time.time()),
        model=backend.engine.info.model,
        conversation_id=token,
        choices=[ChunkChoice(delta=delta, finish_reason=finish)] if delta is not None else [],
        **extra,
    )


def final_chunk(
    backend: Backend, result: TurnResult, token: str, completion_id: str
) -> ChatCompletionChunk:
    """The event that ends the reply: its finish_reason, the FAQ fields, the reply as saved."""
    fields = faq_fields(backend, result, token).model_dump(exclude={"conversation_id"})
    finish = _finish_reason(result)
    return chunk(
        backend, token, completion_id, Delta(), finish_reason=finish, answer=result.answer, **fields
    )


def usage_chunk(
    backend: Backend, result: TurnResult, token: str, completion_id: str
) -> ChatCompletionChunk:
    """OpenAI's stream_options.include_usage event: no choices, the token counts."""
    return chunk(backend, token, completion_id, None, usage=_usage(result))


def history(backend: Backend, token: str, messages: list[Message]) -> History:
    return History(
        conversation_id=token,
        messages=[
            HistoryMessage(
                role=m.role,
                content=m.content,
                created_at=m.created_at,
                stopped=m.stopped,
                sources=sources(backend, m.sources),
                handoff=m.handoff,
                unsupported_facts=list(m.unsupported),
                clarify=_clarify(backend, m.choices),
                person=m.from_person,
            )
            for m in messages
        ],
    )
