"""What a customer reads from the FAQ bot, scored turn by turn (used by bench/faq_bench.py).

Each turn runs through the real Session and FaqPolicy on the real model, as in the app. A turn
counts by what the bot did: answered from an entry (directly, or the customer's pick after an
ask-back), asked back (with which choices), handed off, or something else (small talk, the
reply to a yes/no). What the customer reads of an answer is judged against its article with
this file's own rules (not the policy's): a fact is a number, amount, time, address or a name
(a capitalised word that does not start a sentence); the answer "states a fact the article
lacks" when one of its facts is not in the article, and "keeps all key facts" when every fact
of the article is in it.
"""

import json
import re
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from chatbot.conversation.session import Session, TurnResult
from chatbot.engines.base import GenerationOptions
from chatbot.faq.knowledge_base import KnowledgeBase
from chatbot.faq.policy import FaqPolicy
from chatbot.store.store import Store

NUMERIC = re.compile(
    r"\$[\d,]+(?:\.\d+)?|\b\d(?:[\d,\-]*\d)?(?:\.\d+)?(?:\s?(?:am|pm|%))?"
    r"|[\w.]+@[\w.]+\w|\b[\w-]+\.example\b"
)
NAME = re.compile(r"\b[A-Z][A-Za-z]*(?:[ -][A-Z][A-Za-z]*)*")
QUOTE_HEADER = re.compile(r'^From our help article "[^"]*":\s*', re.MULTILINE)
ANSWERED = ("answer",)
ASKED = ("ask_back", "ask_again")
HANDED_OFF = ("handoff", "person_request")


def key_facts(text: str) -> list[str]:
    """The facts of a text, each once, in order."""
    found = [m.group(0) for m in NUMERIC.finditer(text)]
    for sentence in re.split(r"(?<=[.!?:])\s+|\n+", text):
        found += [m.group(0) for m in NAME.finditer(sentence) if m.start() > 0]
    return list(dict.fromkeys(found))


@dataclass
class Judged:
    """One answer a customer read, against its article."""

    keeps_all: bool
    lacks: list[str]  # its facts the article does not state
    quoted: str | None
    repeated: bool


def judge(result: TurnResult, kb: KnowledgeBase) -> Judged:
    entry = kb.entry(result.sources[0])
    shown = QUOTE_HEADER.sub("", result.answer)  # the quote's own header names the entry
    present = [f for f in key_facts(entry.answer) if f.lower() in shown.lower()]
    lacks = [f for f in key_facts(shown) if f.lower() not in entry.answer.lower()]
    repeated = bool(result.stats and result.stats.stop_reason == "repetition")
    return Judged(len(present) == len(key_facts(entry.answer)), lacks, result.quoted, repeated)


@dataclass
class Tally:
    """Counts over scored turns (covered: an entry answers it; uncovered: none does)."""

    covered: int = 0
    direct: int = 0
    resolved: int = 0
    handed_off: int = 0
    wrong: int = 0
    uncovered: int = 0
    uncovered_direct: int = 0
    answers: list[Judged] = field(default_factory=list)

    def add(self, expected: str | None, result: TurnResult) -> None:
        answered = result.band in ANSWERED and bool(result.sources)
        if expected is None:
            self.uncovered += 1
            self.uncovered_direct += answered
            return
        self.covered += 1
        right = answered and result.sources[0] == expected
        offered = [c.id for c in result.clarify] if result.band in ASKED else []
        self.direct += right
        self.wrong += answered and not right
        self.resolved += right or expected in offered
        self.handed_off += result.band in HANDED_OFF

    def row(self) -> str:
        def rate(n: int, d: int) -> str:
            return f"{n / d:.3f}" if d else "  -  "

        n = self.covered
        rates = (self.direct, self.resolved, self.handed_off, self.wrong)
        return (
            f"{rate(self.uncovered_direct, self.uncovered):>9} "
            + " ".join(f"{rate(k, n):>9}" for k in rates)
            + f"   ({n} covered, {self.uncovered} uncovered)"
        )

    def facts_lines(self) -> list[str]:
        n = len(self.answers)
        if not n:
            return ["  no answers from an entry"]
        lacking = sum(bool(a.lacks) for a in self.answers)
        complete = sum(a.keeps_all for a in self.answers)
        quoted = [a.quoted for a in self.answers if a.quoted]
        why = ", ".join(f"{r} {quoted.count(r)}" for r in sorted(set(quoted))) or "none"
        return [
            f"  answers stating a fact the article lacks: {lacking} of {n} = {lacking / n:.3f}"
            "  (target <= 0.02)",
            f"  answers keeping all of the article's key facts: {complete} of {n} = "
            f"{complete / n:.3f}  (target >= 0.90)",
            f"  the article quoted instead of the model's reply: {len(quoted)} of {n} ({why})",
        ]


BAND_HEADER = (
    f"  {'':<24}{'uncov.':>9} {'covered':>9} {'covered':>9} {'covered':>9} {'covered':>9}\n"
    f"  {'':<24}{'direct':>9} {'direct':>9} {'resolved':>9} {'handoff':>9} {'wrong':>9}\n"
    f"  {'targets':<24}{'<=0.05':>9} {'>=0.80':>9} {'>=0.97':>9} {'<=0.03':>9}"
)


def run_turns(
    engine, kb: KnowledgeBase, conversations: list[list[str]], expected: list[list]
) -> tuple[Tally, list[list[TurnResult]]]:
    """Send each conversation's messages in order through a Session; score every turn."""
    tally, transcripts = Tally(), []
    options = GenerationOptions(max_tokens=160, temperature=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.db")
        for messages, wanted in zip(conversations, expected, strict=True):
            session = Session(engine, store, policy=FaqPolicy(kb), options=options)
            results = []
            for message, want in zip(messages, wanted, strict=True):
                result = [i for i in session.send(message) if isinstance(i, TurnResult)][0]
                tally.add(want, result)
                if result.band in ANSWERED and result.sources:
                    tally.answers.append(judge(result, kb))
                results.append(result)
            transcripts.append(results)
        store.close()
    return tally, transcripts


def multiturn(path: Path) -> dict[str, list[dict]]:
    """The multi-turn conversations by domain."""
    found: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            conversation = json.loads(line)
            found.setdefault(conversation["domain"], []).append(conversation)
    return found


def show_transcript(conversation: dict, results: list[TurnResult]) -> None:
    print(f"  {conversation['id']} ({conversation['domain']}):")
    for turn, result in zip(conversation["turns"], results, strict=True):
        answer = " ".join(result.answer.split())
        print(f"    customer: {turn['message']}")
        cut = f"{answer[:150]}..." if len(answer) > 150 else answer
        print(f"    bot [{result.band}{', ' + result.sources[0] if result.sources else ''}]: {cut}")


def token_summary(results: list[TurnResult]) -> str:
    tokens = [r.stats.completion_tokens for r in results if r.stats]
    return f"median {statistics.median(tokens):.0f} tokens" if tokens else "no model calls"
