"""The HTTP API: chat completions (streamed or not), a conversation's history, models, health.

A turn goes: key checked (middleware), body parsed and limits checked, the conversation token
looked up, a place in the bounded queue taken (or 503), then the Session runs in a worker thread
(chatbot.serve.turns). A streamed reply starts once the first piece of it exists, so an error
before that (model down, message too long for the context) still gets its HTTP status.
"""

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from chatbot.conversation.session import TurnResult
from chatbot.engines.base import GenerationOptions, TextChunk
from chatbot.serve import responses
from chatbot.serve.limiter import Limiter, Ticket
from chatbot.serve.models import ApiError, ChatRequest, Delta, parse_request
from chatbot.serve.settings import ServeSettings
from chatbot.serve.turns import END, Backend, TurnStream, open_session, start_conversation

CONVERSATION_HEADER = "X-Conversation-Id"
router = APIRouter()


@dataclass
class ServeState:
    """The app's shared state: read and changed on the event loop's thread only."""

    backend: Backend
    settings: ServeSettings
    limiter: Limiter
    busy: set[int] = field(default_factory=set)  # conversations with a turn running


def state_of(request: Request) -> ServeState:
    return request.app.state.serve


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or ApiError(413) as soon as it passes `limit` bytes."""
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise ApiError(413, f"the request body is over {limit} bytes")
    return bytes(body)


def conversation_of(state: ServeState, token: str) -> int:
    """The row id behind a customer's token; 404 for any token this server did not give."""
    found = state.backend.store.conversation_for_token(token) if len(token) <= 200 else None
    if found is None:
        raise ApiError(404, "no such conversation; start a new one without conversation_id")
    return found


def options_for(chat: ChatRequest, state: ServeState) -> GenerationOptions:
    settings, backend = state.settings, state.backend
    return GenerationOptions(
        max_tokens=chat.reply_tokens(settings.max_reply_tokens),
        temperature=backend.temperature if chat.temperature is None else chat.temperature,
        top_p=GenerationOptions.top_p if chat.top_p is None else chat.top_p,
        seed=chat.seed,
    )


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):
    state = state_of(request)
    chat = parse_request(await read_body(request, state.settings.max_body_bytes))
    text = chat.new_message(state.settings.max_message_chars)
    options = options_for(chat, state)
    token = chat.conversation_id or request.headers.get(CONVERSATION_HEADER)
    conversation_id = conversation_of(state, token) if token else None
    if conversation_id in state.busy:
        raise ApiError(409, "this conversation is still answering its previous message")
    ticket = state.limiter.admit()  # QueueFull: 503 with Retry-After
    try:
        await ticket.wait()
        if conversation_id is None:
            started = await run_in_threadpool(start_conversation, state.backend, text)
            conversation_id, token = started
        turn = _start_turn(state, ticket, conversation_id, text, options)
    except BaseException:
        ticket.release()
        raise
    headers = {CONVERSATION_HEADER: token}
    completion_id = f"chatcmpl-{secrets.token_hex(12)}"
    if not chat.stream:
        result = await _collect(turn)
        body = responses.completion(state.backend, result, token, completion_id)
        return JSONResponse(body.model_dump(exclude_none=True), headers=headers)
    first = await _first(turn)  # errors before the reply starts keep their HTTP status
    include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
    events = _events(state, turn, first, token, completion_id, include_usage)
    return EventSourceResponse(events, headers=headers, ping=15)


def _start_turn(
    state: ServeState, ticket: Ticket, conversation_id: int, text: str, options: GenerationOptions
) -> TurnStream:
    """The turn in its thread; the conversation and the slot are freed when the thread ends."""
    session = open_session(state.backend, conversation_id, options)
    state.busy.add(conversation_id)

    def done() -> None:
        state.busy.discard(conversation_id)
        ticket.release()

    return TurnStream(lambda should_stop: session.send(text, should_stop), done)


async def _collect(turn: TurnStream) -> TurnResult:
    """The TurnResult, once the whole reply is written; ApiError if the turn failed."""
    result = None
    try:
        while (item := await turn.next()) is not END:
            if isinstance(item, TurnResult):
                result = item
    except Exception as exc:
        raise responses.api_error_for(exc) from exc
    if result is None:
        raise ApiError(500, "the turn ended without a reply")
    return result


async def _first(turn: TurnStream) -> object:
    """The first piece of the reply (or the result of a reply with no text)."""
    try:
        while True:
            item = await turn.next()
            if isinstance(item, TextChunk | TurnResult) or item is END:
                return item
    except Exception as exc:
        turn.stop()
        raise responses.api_error_for(exc) from exc


async def _events(
    state: ServeState,
    turn: TurnStream,
    item: object,
    token: str,
    completion_id: str,
    include_usage: bool,
) -> AsyncIterator[dict[str, str]]:
    """The SSE events: role, text deltas, the final chunk with the FAQ fields, [DONE].

    If the customer goes away mid-reply, the turn is stopped; the session saves the reply so
    far, marked stopped, with its latency row.
    """
    backend = state.backend

    def event(value) -> dict[str, str]:
        return {"data": value.model_dump_json(exclude_none=True)}

    try:
        yield event(responses.chunk(backend, token, completion_id, Delta(role="assistant")))
        result = None
        while item is not END:
            if isinstance(item, TextChunk):
                delta = Delta(content=item.text)
                yield event(responses.chunk(backend, token, completion_id, delta))
            elif isinstance(item, TurnResult):
                result = item
            item = await turn.next()
        if result is None:
            raise ApiError(500, "the turn ended without a reply")
        yield event(responses.final_chunk(backend, result, token, completion_id))
        if include_usage:
            yield event(responses.usage_chunk(backend, result, token, completion_id))
    except Exception as exc:  # the status line is sent: the error goes in the stream
        yield {"data": json.dumps(responses.api_error_for(exc).body())}
    finally:
        turn.stop()
    yield {"data": "[DONE]"}


@router.get("/v1/conversations/{token}")
async def conversation_history(token: str, request: Request):
    """A customer's conversation as saved, for the web page to show again after a reload."""
    state = state_of(request)
    conversation_id = conversation_of(state, token)
    messages = await run_in_threadpool(state.backend.store.messages, conversation_id)
    body = responses.history(state.backend, token, messages)
    return JSONResponse(body.model_dump(exclude_none=True), headers={CONVERSATION_HEADER: token})


@router.get("/v1/models")
def models(request: Request):  # a thread: a remote engine may ask its server the first time
    info = state_of(request).backend.engine.info
    model = {"id": info.model, "object": "model", "created": 0, "owned_by": "chatbot"}
    return {"object": "list", "data": [model]}


@router.get("/health")
async def health(request: Request):
    """Liveness and load, for a load balancer; no key needed, nothing private in it."""
    state = state_of(request)
    limiter, settings = state.limiter, state.settings
    return {
        "status": "ok",
        "active": limiter.active,
        "waiting": limiter.waiting,
        "parallel": limiter.parallel,
        "queue": limiter.queue,
        "max_message_chars": settings.max_message_chars,
        "max_tokens": settings.max_reply_tokens,
    }
