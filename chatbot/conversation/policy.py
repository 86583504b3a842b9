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

ReplyReason = Literal["small_talk", "handoff", "person_request"]


@dataclass(frozen=True)
class ReplyNow:
    """Answer with this text without calling the model.

    reason: "small_talk" (a greeting or thanks), "handoff" (nothing good enough to answer
    from) or "person_request" (the customer asked for a person). The last two are saved as
    hand-offs, which `chatbot handoffs` lists for the support team.
    """

    text: str
    reason: ReplyReason

    @property
    def handoff(self) -> bool:
        """True when a person takes the conversation over."""
        return self.reason != "small_talk"


@dataclass(frozen=True)
class AskModel:
    """Ask the model, with `prompt` as the newest user message (plain chat: the typed text).

    sources: the ids of the articles the prompt quotes (what the turn records as its sources).
    grounds: the texts a grounded reply may take its facts from, handed back to
    `TurnPolicy.unsupported` once the reply is written; empty: nothing to check.
    """

    prompt: str
    sources: tuple[str, ...] = ()
    grounds: tuple[str, ...] = ()


TurnDecision = ReplyNow | AskModel


class TurnPolicy(Protocol):
    """Decides, per customer message, what the session does (chatbot.faq.policy.FaqPolicy)."""

    def decide(self, message: str, history: Sequence[Message]) -> TurnDecision:
        """The decision for `message` (cleaned, not yet saved), given the conversation's saved
        messages before it, oldest first."""
        ...

    def unsupported(self, reply: str, asked: AskModel) -> tuple[str, ...]:
        """The facts (numbers, prices, names) the reply states that `asked.grounds` do not."""
        ...
