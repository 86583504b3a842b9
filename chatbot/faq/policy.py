"""The FAQ bot's decision per customer message, in one place: the `TurnPolicy` Session asks.

In order: a request for a person is handed off at once; a reply to the bot's last message is
read as such (a pick after an ask-back, a yes or no after a hand-off); a line of small talk gets
its reply; anything else is looked up in the knowledge base (read with the customer's message
before only when it leans on it) and put in a band: answered from the best entry, asked back
("Did you mean ...?", chatbot.faq.ask_back) or handed off. Only an answer calls the model, with
the entry quoted in the prompt; the reply is then checked against the entry, and in the
default `auto` answer mode the customer reads the entry's own text instead of a reply that
fails the check (chatbot.faq.facts), was cut for repeating itself, or drops its facts.
"""

import re
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from chatbot.conversation.policy import (
    AskBack,
    AskModel,
    Checked,
    Choice,
    ReplyNow,
    Resolves,
    TurnDecision,
)
from chatbot.errors import ChatbotError
from chatbot.faq.ask_back import (
    HANDOFF_CONFIRMED,
    HANDOFF_WITHDRAWN,
    NO_CHOICES_OPEN,
    NOTHING_ASKED,
    Pick,
    ask_back_text,
    out_of_range_text,
    read_pick,
    which_one_text,
    yes_or_no,
)
from chatbot.faq.facts import echoed_premises, missing_facts, unsupported_facts
from chatbot.faq.knowledge_base import (
    CHOICES,
    GROUNDING_ENTRIES,
    FaqHit,
    KnowledgeBase,
    band_of,
)
from chatbot.faq.load import FaqEntry
from chatbot.faq.person_request import asks_for_a_person
from chatbot.faq.small_talk import small_talk_reply
from chatbot.store.records import Message

AnswerMode = Literal["generate", "quote", "auto"]
ANSWER_MODES: tuple[AnswerMode, ...] = ("generate", "quote", "auto")
# A reply this many times longer than its article (plus 25 words) says what the article does not:
# asked how to use a promo code, SmolLM2 wrote 29 numbered steps for a two-sentence article.
TOO_LONG = 2.5
_LIST_MARKER = re.compile(r"^\W*\d+[.)]\s*")
# "the one about cards": a pick in words, even when another entry matches the words better.
_NAMES_A_CHOICE = ("the one", "about ", "i meant", "i mean")


class FaqPolicy:
    """Answer from the knowledge base, ask back, or hand off (chatbot.conversation.policy).

    answer_mode: "generate" (the model's reply, flagged when it fails the check), "quote"
    (the entry's own text, no model), "auto" (the model's reply, else the entry's text).
    """

    def __init__(self, knowledge_base: KnowledgeBase, answer_mode: AnswerMode = "auto"):
        if answer_mode not in ANSWER_MODES:  # the config file's value is not checked by argparse
            raise ChatbotError(
                f"--faq-answer must be one of {', '.join(ANSWER_MODES)}, got {answer_mode!r}"
            )
        self.knowledge_base = knowledge_base
        self.answer_mode = answer_mode

    def decide(self, message: str, history: Sequence[Message]) -> TurnDecision:
        """Hand off, read a reply to the bot's last message, reply to small talk, or look up."""
        kb = self.knowledge_base
        last = next((m for m in reversed(history) if m.role == "assistant"), None)
        offered = _offered(kb, last)
        if asks_for_a_person(message):
            resolves = _resolving(history, "handoff") if offered else None
            return ReplyNow(kb.requested_reply, "person_request", resolves=resolves)
        if line := small_talk_reply(message):
            return ReplyNow(line, "small_talk")
        if offered:
            return self._after_ask_back(message, history, offered)
        if last is not None and last.handoff and (said := yes_or_no(message)) is not None:
            if said.kind == "yes":
                return ReplyNow(HANDOFF_CONFIRMED, "handoff_reply")
            declined = Resolves(last.id, "declined")
            return ReplyNow(HANDOFF_WITHDRAWN, "handoff_reply", resolves=declined)
        if (pick := read_pick(message, CHOICES)) is not None:  # "2", "yes": nothing was asked
            text = NOTHING_ASKED if pick.kind in ("yes", "no") else NO_CHOICES_OPEN
            return ReplyNow(text, "choice_help")
        return self._lookup(message, history)

    def check(self, reply: str, asked: AskModel, repeated: bool) -> Checked:
        """The facts the reply states that its article does not (its own or the customer's),
        and in auto mode the article's own text in place of a reply that fails the check."""
        article = " ".join(asked.grounds)
        made_up = unsupported_facts(reply, asked.grounds)
        said = {fact.lower() for fact in made_up}
        echoed = [w for w in echoed_premises(reply, asked.asked, article) if w not in said]
        unsupported = (*made_up, *echoed)
        if self.answer_mode != "auto":
            return Checked(reply, unsupported)
        reason = (
            "fact_check" if unsupported
            else "repetition" if repeated or _repeats_lines(reply)
            else "dropped_facts" if missing_facts(reply, article) or not reply.strip()
            else "too_long" if len(reply.split()) > TOO_LONG * len(article.split()) + 25
            else None
        )  # fmt: skip
        entry = self.knowledge_base.entry(asked.sources[0]) if asked.sources else None
        if reason is None or entry is None:
            return Checked(reply, unsupported)
        return Checked(quoted_answer(entry), (), reason)

    def _lookup(
        self, message: str, history: Sequence[Message], offered: tuple[Choice, ...] = ()
    ) -> TurnDecision:
        """The message looked up: answered, asked back or handed off by its band. Right after
        an ask-back (`offered`), a message in the middle band again whose best entry was among
        the choices is the same question reworded: handed off (ask once, then a person). One
        whose best entry was not offered is a new question, asked back afresh. Either way its
        outcome is recorded on the ask-back."""
        kb = self.knowledge_base
        retrieval = kb.retrieve(message, k=CHOICES, previous=_message_before(history, kb))
        band, resolves = retrieval.band, None
        choices = tuple(Choice(hit.id, hit.question) for hit in retrieval.choices)
        if offered:  # the same question again (its best entry was offered): a person next
            again = band == "ask" and choices[0].id in {choice.id for choice in offered}
            band = "handoff" if again else band
            resolves = _resolving(history, "handoff" if band == "handoff" else "new_question")
        if band == "handoff":
            return ReplyNow(kb.handoff_reply, "handoff", resolves=resolves)
        if band == "ask":
            return AskBack(ask_back_text(choices), choices, resolves=resolves)
        return self._answer(message, retrieval.hits[0], resolves)

    def _after_ask_back(
        self, message: str, history: Sequence[Message], offered: tuple[Choice, ...]
    ) -> TurnDecision:
        """The customer's reply to "Did you mean ...?": a pick, a no, or something new."""
        pick = read_pick(message, len(offered)) or self._picked_in_words(message, offered, history)
        if pick is None:
            return self._lookup(message, history, offered)
        if pick.kind == "no":
            return ReplyNow(
                self.knowledge_base.handoff_reply,
                "handoff",
                resolves=_resolving(history, "declined"),
            )
        if pick.kind == "out_of_range":
            return AskBack(out_of_range_text(pick.number, offered), offered, again=True)
        if pick.kind == "yes" and len(offered) > 1:
            return AskBack(which_one_text(offered), offered, again=True)
        chosen = offered[pick.index]
        entry = self.knowledge_base.entry(chosen.id)
        hit = FaqHit(entry.id, entry.question, entry.answer, entry.category, 1.0)
        resolves = _resolving(history, "picked", chosen.id)
        return self._answer(_question_before_ask_back(history), hit, resolves)

    def _picked_in_words(
        self, message: str, offered: tuple[Choice, ...], history: Sequence[Message]
    ) -> Pick | None:
        """A choice named in words ("the one about which cards you accept"): the offered
        entry the message matches best, when it says "the one", or when that entry is its
        best match and would answer it outright. A message an entry not offered would answer
        outright is a new question instead."""
        kb = self.knowledge_base
        ids = [choice.id for choice in offered]
        hits = kb.search(message, k=len(kb.entries))
        # The score alone: naming words ("the one about") are no detail the answer check
        # should weigh against the entry.
        if band_of(hits, kb.bands) == "answer" and hits[0].id not in ids:
            return None
        named = message.lower().lstrip().startswith(_NAMES_A_CHOICE)
        for rank, hit in enumerate(hits):
            if hit.id in ids and hit.score >= kb.bands.handoff and (rank == 0 or named):
                if not named and not self._explains(message, history, hit.id):
                    return None
                return Pick("choice", ids.index(hit.id))
        return None

    def _explains(self, message: str, history: Sequence[Message], faq_id: str) -> bool:
        """Whether the entry answers the message read with the question asked back about:
        the answer check's verdict. Without it a new question near a choice was taken as picking
        it and answered by score alone: the most common confident wrong answer in the
        multi-turn sets (14 of 26)."""
        previous = _question_before_ask_back(history)
        retrieval = self.knowledge_base.retrieve(message, k=CHOICES, previous=previous)
        return retrieval.band == "answer" and retrieval.hits[0].id == faq_id

    def _answer(self, question: str, hit: FaqHit, resolves: Resolves | None) -> TurnDecision:
        """Answer from one entry: the model's reply (checked), or the entry quoted."""
        if self.answer_mode == "quote":
            entry = self.knowledge_base.entry(hit.id)
            text = quoted_answer(entry)
            return ReplyNow(text, "answer", (hit.id,), quoted="setting", resolves=resolves)
        return AskModel(
            prompt=grounded_user_message(question, [hit]),
            sources=(hit.id,),
            grounds=(hit.answer,),  # the article only: the customer's words are no ground
            hold=self.answer_mode == "auto",
            band="answer",
            resolves=resolves,
            asked=question,
        )


def quoted_answer(entry: FaqEntry) -> str:
    """The entry's own text as the answer, marked as quoted from the help article."""
    return f'From our help article "{entry.question}":\n\n{entry.answer}'


def _repeats_lines(reply: str) -> bool:
    """A line said three times, list numbers aside ("12. Click on the button." again and
    again): a loop the streaming guard misses, since the numbers differ."""
    lines = [_LIST_MARKER.sub("", line).strip().lower() for line in reply.splitlines()]
    return any(n >= 3 for line, n in Counter(lines).items() if len(line) >= 12)


def _offered(kb: KnowledgeBase, last: Message | None) -> tuple[Choice, ...]:
    """The choices the bot's last message offers (empty unless it asked back)."""
    if last is None or not last.choices:
        return ()
    entries = [kb.entry(faq_id) for faq_id in last.choices]
    return tuple(Choice(e.id, e.question) for e in entries if e is not None)


def _resolving(history: Sequence[Message], outcome, choice: str | None = None) -> Resolves | None:
    """The outcome to record on the open ask-back (the last "ask_back", before any repeat)."""
    for message in reversed(history):
        if message.band == "ask_back":
            return Resolves(message.id, outcome, choice)
    return None


# Replies to a message that was looked up in the knowledge base (or picked from an ask-back).
_LOOKED_UP = ("answer", "ask_back", "handoff")


def _message_before(history: Sequence[Message], kb: KnowledgeBase) -> str | None:
    """What a follow-up leans on: the customer's last message that was looked up, skipping
    small talk and yes/no replies ("thanks" says nothing about "what about tracking it?"),
    and for a pick from an ask-back ("2") the picked entry's question."""
    for n in range(len(history) - 1, 0, -1):
        reply, asked = history[n], history[n - 1]
        if reply.role != "assistant" or asked.role != "user" or reply.band not in _LOOKED_UP:
            continue
        offered = history[n - 2].choices if n >= 2 else ()
        picked = reply.band == "answer" and reply.sources and reply.sources[0] in offered
        if picked and read_pick(asked.content, len(offered)) is not None:
            entry = kb.entry(reply.sources[0])
            return entry.question if entry is not None else asked.content
        return asked.content
    return None


def _question_before_ask_back(history: Sequence[Message]) -> str:
    """What the customer asked that the open ask-back was about."""
    for n in range(len(history) - 1, -1, -1):
        if history[n].band == "ask_back":
            before = [m for m in history[:n] if m.role == "user"]
            return before[-1].content if before else ""
    return ""


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
