"""The store's rows as plain frozen objects: what `Store` returns and `stats` reads.

A module of its own so that the store and the statistics over its rows both import it and
neither imports the other.
"""

from dataclasses import dataclass
from datetime import UTC, datetime


def now() -> str:
    """UTC timestamp, sortable as text (every table's created_at and the like)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    created_at: str
    updated_at: str
    system_prompt: str | None
    model: str | None


@dataclass(frozen=True)
class ConversationSettings:
    """What a conversation's next turn uses, set in the app; None: the app's default."""

    system_prompt: str | None = None
    model_file: str | None = None  # a GGUF's file name in the model cache (converter.paths)
    temperature: float | None = None
    max_tokens: int | None = None
    mode: str | None = None  # "faq" | "chat"; None: FAQ when the app has a knowledge base


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    role: str  # "user" | "assistant"
    content: str  # what the user typed / the reply exactly as generated
    created_at: str
    stopped: bool = False
    sources: tuple[str, ...] = ()  # FAQ entry ids the reply was grounded on
    handoff: bool = False
    prompt_content: str | None = None  # what the model saw instead, when it differs
    unsupported: tuple[str, ...] = ()  # facts the reply states that its FAQ article does not
    # The FAQ bot's record (chatbot.store.migrations 0007 says what each value means).
    band: str | None = None
    choices: tuple[str, ...] = ()  # entry ids an ask-back offered
    outcome: str | None = None  # what became of an ask-back or a hand-off
    choice: str | None = None  # the entry id picked from an ask-back
    quoted: str | None = None  # why the article's text was shown instead of the model's reply
    generated: str | None = None  # the model's reply, when the article was shown instead
    replaced_at: str | None = None  # set when the turn was sent again (kept as an alternative)

    @property
    def from_person(self) -> bool:
        """A reply a person of the support team wrote (`chatbot handoffs --reply`)."""
        return self.band == PERSON_BAND


PERSON_BAND = "person"


@dataclass(frozen=True)
class TurnRecord:
    """One row of the latency log, as the session measured it."""

    conversation_id: int
    message_id: int | None
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    ttft_ms: float
    decode_tps: float
    total_ms: float
    cpu_seconds: float
    model_file: str
    quantization: str
    threads: int
    stop_reason: str
    created_at: str = ""
    id: int | None = None


@dataclass(frozen=True)
class FaqCounts:
    """What the FAQ bot did, over every saved reply (`chatbot stats`, `chatbot handoffs`)."""

    answered: int = 0  # replies from an entry (the model's or the article quoted)
    quoted: int = 0  # ... of which the article's own text (by setting or as a fallback)
    asked_back: int = 0  # "Did you mean ...?"
    picked: int = 0  # ask-backs the customer answered with a choice
    declined: int = 0  # ... with "no": handed off
    handed_off_after: int = 0  # ... with a message the bot still could not place: handed off
    new_question: int = 0  # ... with a new question the bot answered
    open: int = 0  # ... not answered (yet)
    handoffs: int = 0  # hand-offs of every kind
    handoffs_declined: int = 0  # hand-offs the customer then said no to


@dataclass(frozen=True)
class Handoff:
    """A question the FAQ bot handed to a person."""

    conversation_id: int
    message_id: int
    question: str  # what the customer asked (not their "no" to an ask-back)
    created_at: str
    reply: str = ""  # their last message, when it differs: "no", "none of those", a rephrase
    served: bool = False  # the conversation came through `chatbot serve` (a customer's)
    resolved_at: str | None = None  # when a person marked it resolved
