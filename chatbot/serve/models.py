"""The API's request and response bodies (OpenAI's chat completion shapes, plus the FAQ fields).

Requests are checked here (types, the one new message, limits) so that the routes only see a
well-formed `ChatRequest`; anything wrong becomes one `ApiError` with a message for the
developer who wrote the client.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chatbot.conversation.session import clean_text


class ApiError(Exception):
    """An HTTP error in OpenAI's error shape: {"error": {"message", "type", "code"}}."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "code": self.status}}


class ContentPart(BaseModel):
    """One part of a message's content list; only text parts are accepted."""

    model_config = ConfigDict(extra="ignore")
    type: str
    text: str | None = None


class InMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        if any(part.type != "text" for part in self.content):
            raise ApiError(400, "only text content is supported")
        return "".join(part.text or "" for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """POST /v1/chat/completions. Only the last user message is used: the history is kept on
    the server, under `conversation_id`. `model` is accepted and ignored (one model served)."""

    model_config = ConfigDict(extra="ignore")
    messages: list[InMessage] = Field(default_factory=list)
    conversation_id: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None  # OpenAI's newer name for max_tokens
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None

    def new_message(self, max_chars: int) -> str:
        """The customer's new message, cleaned; ApiError when missing, empty or too long."""
        users = [m for m in self.messages if m.role == "user"]
        if not users:
            raise ApiError(400, 'no user message: send messages=[{"role": "user", ...}]')
        text = clean_text(users[-1].text())
        if not text:
            raise ApiError(400, "the user message is empty")
        if len(text) > max_chars:
            raise ApiError(
                400, f"the user message has {len(text)} characters; the limit is {max_chars}"
            )
        return text

    def reply_tokens(self, limit: int) -> int:
        """max_tokens as asked (else the limit); ApiError outside 1..limit."""
        asked = self.max_tokens if self.max_tokens is not None else self.max_completion_tokens
        if asked is None:
            return limit
        if not 1 <= asked <= limit:
            raise ApiError(400, f"max_tokens must be between 1 and {limit}, got {asked}")
        return asked


def parse_request(raw: bytes) -> ChatRequest:
    """The body as a ChatRequest; ApiError(400) saying what is wrong."""
    try:
        return ChatRequest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise ApiError(400, "the body is not valid JSON") from None
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(400, f"{where}: {first['msg']}") from None


class Source(BaseModel):
    """A FAQ entry a reply was grounded on."""

    id: str
    question: str | None = None
    answer: str | None = None


class ClarifyChoice(BaseModel):
    """One entry an ask-back offers; the customer answers with its number (1 = first)."""

    id: str
    question: str


class FaqFields(BaseModel):
    """What FAQ mode adds to every reply (empty in plain chat)."""

    conversation_id: str
    sources: list[Source] = Field(default_factory=list)
    handoff: bool = False
    unsupported_facts: list[str] = Field(default_factory=list)
    clarify: list[ClarifyChoice] | None = None  # an ask-back's choices; left out otherwise


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class OutMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: OutMessage
    finish_reason: str


class ChatCompletion(FaqFields):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One streamed event; the one with a finish_reason also carries the FAQ fields and
    `answer`, the reply as saved: it can end before the streamed text (a reply that starts
    repeating itself is cut where the repeat began), and the history shows it so."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    conversation_id: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    sources: list[Source] | None = None
    handoff: bool | None = None
    unsupported_facts: list[str] | None = None
    clarify: list[ClarifyChoice] | None = None
    answer: str | None = None


class HistoryMessage(BaseModel):
    role: str
    content: str
    created_at: str
    stopped: bool = False
    sources: list[Source] = Field(default_factory=list)
    handoff: bool = False
    unsupported_facts: list[str] = Field(default_factory=list)
    clarify: list[ClarifyChoice] | None = None
    person: bool = False  # a person of the support team wrote it (`chatbot handoffs --reply`)


class History(BaseModel):
    """GET /v1/conversations/{id}: what the web page shows again after a reload."""

    conversation_id: str
    messages: list[HistoryMessage]
