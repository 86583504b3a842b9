"""The FAQ bot's decision per customer message, in one place: the `TurnPolicy` Session asks.

In order: a request for a person is handed off at once; a line of small talk gets its reply;
anything else is looked up in the knowledge base (read with the customer's message before, for
a follow-up), handed off when no entry is good enough, else answered by the model from the
best entry, quoted in the prompt. After the reply, its facts are checked against that entry.
Neither hand-offs nor small talk call the model.
"""

from collections.abc import Sequence

from chatbot.conversation.policy import AskModel, ReplyNow, TurnDecision
from chatbot.faq.facts import unsupported_facts
from chatbot.faq.knowledge_base import GROUNDING_ENTRIES, FaqHit, KnowledgeBase
from chatbot.faq.person_request import asks_for_a_person
from chatbot.faq.small_talk import small_talk_reply
from chatbot.store.records import Message


class FaqPolicy:
    """Answer from the knowledge base, or hand off to a person (chatbot.conversation.policy)."""

    def __init__(self, knowledge_base: KnowledgeBase):
        self.knowledge_base = knowledge_base

    def decide(self, message: str, history: Sequence[Message]) -> TurnDecision:
        """Hand off, reply to small talk, or ask the model grounded on the best entry."""
        kb = self.knowledge_base
        if asks_for_a_person(message):
            return ReplyNow(kb.requested_reply, reason="person_request")
        if line := small_talk_reply(message):
            return ReplyNow(line, reason="small_talk")
        asked = [m.content for m in history if m.role == "user"]
        retrieval = kb.retrieve(message, previous=asked[-1] if asked else None)
        if not retrieval.confident:
            return ReplyNow(kb.handoff_reply, reason="handoff")
        return AskModel(
            prompt=grounded_user_message(message, retrieval.hits),
            sources=tuple(retrieval.sources),
            # The article, and what the customer said: a reply may repeat their order number.
            grounds=(*(hit.answer for hit in retrieval.grounding), *asked, message),
        )

    def unsupported(self, reply: str, asked: AskModel) -> tuple[str, ...]:
        """The facts the reply states that neither its article nor the customer did."""
        return tuple(unsupported_facts(reply, asked.grounds))


def grounded_user_message(question: str, hits: list[FaqHit]) -> str:
    """The newest user message of a FAQ turn: the question, then the article to answer from.

    The article goes here rather than in the system prompt so that earlier turns render to
    the same tokens and the model's KV cache for them stays valid. The wording was chosen on
    the helpdesk questions (data/eval/helpdesk_eval.jsonl) among seven, then checked on the store's
    101 answered ones with SmolLM2-135M: 73% of the article's key facts kept (63% with the
    earlier "rewrite the article" wording), and 1% of replies echo the prompt's labels back
    (66% before). A 135M model loses the facts of one article among several: one is quoted.
    """
    articles = "\n\n".join(f'"{hit.answer}"' for hit in hits[:GROUNDING_ENTRIES])
    return (
        f"{question.strip()}\n\nAnswer using this help article and keep its numbers, prices, "
        f"times and names exactly:\n{articles}"
    )
