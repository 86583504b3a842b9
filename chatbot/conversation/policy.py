"""What `Session` asks before each turn: the protocol a policy (the FAQ bot's) implements.

The session knows nothing of FAQs: it gives the policy the new message and the history, and
acts on the typed decision it gets back. Plain chat has no policy: every message goes to the
model as typed. To add a kind of decision, add a frozen dataclass here, add it to
`TurnDecision`, and handle it in `Session.send` (its `match` ends in `assert_never`, so a
type checker names the place that is missing it).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from chatbot.store.records import Message

ReplyReason = Literal[
    "small_talk",  # a greeting or thanks
    "handoff",  # nothing good enough to answer from
    "person_request",  # the customer asked for a person
    "handoff_reply",  # the customer's yes or no after a hand-off
    "choice_help",  # a pick that does not fit the choices, or with none open
    "answer",  # the article's own text, without the model (--faq-answer quote)
]
Outcome = Literal["picked", "declined", "handoff", "new_question"]


@dataclass(frozen=True)
class Resolves:
    """What the customer's message made of an earlier reply, saved on that reply: an
    ask-back answered ("picked" with the entry id, "declined", "handoff", "new_question") or a
    hand-off declined."""

    message_id: int
    outcome: Outcome
    choice: str | None = None


@dataclass(frozen=True)
class ReplyNow:
    """Answer with this text without calling the model.

    reason: see ReplyReason. "handoff" and "person_request" are saved as hand-offs, which
    `chatbot handoffs` lists for the support team. sources: the articles a quoted answer
    comes from; quoted: why the article's text is the answer.
    """

    text: str
    reason: ReplyReason
    sources: tuple[str, ...] = ()
    quoted: str | None = None
    resolves: Resolves | None = None

    @property
    def handoff(self) -> bool:
        """True when a person takes the conversation over."""
        return self.reason in ("handoff", "person_request")

    @property
    def band(self) -> str:
        return self.reason


@dataclass(frozen=True)
class Choice:
    """One entry an ask-back offers: its id and the question the customer sees."""

    id: str
    question: str


@dataclass(frozen=True)
class AskBack:
    """Ask which of these the customer means ("Did you mean: 1. ... 2. ...?"), without the
    model. The next message picks one, declines, or asks something new (chatbot.faq.policy).
    again: the same choices once more, after a pick that did not fit them."""

    text: str
    choices: tuple[Choice, ...]
    again: bool = False
    resolves: Resolves | None = None

    @property
    def band(self) -> str:
        return "ask_again" if self.again else "ask_back"


@dataclass(frozen=True)
class AskModel:
    """Ask the model, with `prompt` as the newest user message (plain chat: the typed text).

    sources: the ids of the articles the prompt quotes (what the turn records as its sources).
    grounds: the texts a grounded reply may take its facts from, handed back to
    `TurnPolicy.check` once the reply is written; empty: nothing to check.
    hold: show the reply only once checked (the check may put the article in its place).
    """

    prompt: str
    sources: tuple[str, ...] = ()
    grounds: tuple[str, ...] = ()
    hold: bool = False
    band: str | None = None  # "answer" for a FAQ answer; None in plain chat
    resolves: Resolves | None = None
    asked: str = ""  # the customer's question (a pick's is the one before the ask-back)


@dataclass(frozen=True)
class Checked:
    """A grounded reply once checked: what the customer reads and why."""

    text: str  # the reply, or the article's own text in its place
    unsupported: tuple[str, ...] = ()  # facts `text` states that its article does not
    quoted: str | None = None  # why the article replaced the reply ("fact_check", ...)


TurnDecision = ReplyNow | AskBack | AskModel


class TurnPolicy(Protocol):
    """Decides, per customer message, what the session does (chatbot.faq.policy.FaqPolicy)."""

    def decide(self, message: str, history: Sequence[Message]) -> TurnDecision:
        """The decision for `message` (cleaned, not yet saved), given the conversation's saved
        messages before it, oldest first."""
        ...

    def check(self, reply: str, asked: AskModel, repeated: bool) -> Checked:
        """The reply checked against `asked.grounds` (`repeated`: cut for repeating itself)."""
        ...
