"""Measuring retrieval and the three bands on labelled questions (`chatbot faq-eval`).

The thresholds are measured on the knowledge base itself (chatbot.faq.calibration); a company
with labelled questions checks them here: top-1 accuracy, top-3 recall, and what each band does
with questions the FAQ covers (answered directly from the right entry, resolved: answered or
the right entry among the choices of an ask-back, handed off) and with those it does not
(answered directly: a confident wrong answer), at the thresholds in use and with the answer
threshold swept.
"""

import json
from dataclasses import dataclass, replace
from pathlib import Path

from chatbot.errors import KnowledgeBaseError
from chatbot.faq.knowledge_base import (
    Bands,
    KnowledgeBase,
    Retrieval,
    band_of,
    choices_of,
)

HANDOFF = "handoff"  # the `expected` value of a question the FAQ does not cover
SWEEP = (0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60)


@dataclass(frozen=True)
class LabelledQuestion:
    question: str
    expected: str  # an entry id, or HANDOFF
    previous: str | None = None  # the customer's message before, for a follow-up


@dataclass(frozen=True)
class Rates:
    """The measures at one answer threshold (each 0..1; 0 when there is nothing to count)."""

    threshold: float
    top1: float
    top3: float
    handoff_recall: float  # uncovered questions not answered directly (asked back or handed off)
    false_handoffs: float  # covered questions handed off
    covered_direct: float = 0.0  # covered, answered directly from the right entry
    covered_resolved: float = 0.0  # ... or the right entry among the ask-back's choices
    covered_wrong: float = 0.0  # covered, answered directly from a wrong entry
    uncovered_direct: float = 0.0  # uncovered, answered directly: a confident wrong answer


@dataclass(frozen=True)
class Evaluation:
    covered: int
    uncovered: int
    threshold: float  # the answer threshold in use
    rates: list[Rates]  # at the threshold in use and at each of SWEEP, lowest first
    answered_uncovered: list[str]  # at the current threshold: the bot answered, should not have
    handed_off_covered: list[str]  # at the current threshold: the bot handed off, should not have
    handoff_threshold: float = 0.0  # below it the bot hands off; between the two it asks back
    checked: Rates | None = None  # as the bot decides, with the answer check; None: it is off

    @property
    def in_use(self) -> Rates:
        """The measures as the bot decides: with the answer check, else at the threshold."""
        if self.checked is not None:
            return self.checked
        return min(self.rates, key=lambda rates: abs(rates.threshold - self.threshold))


def load_questions(path: Path, known_ids: set[str]) -> tuple[list[LabelledQuestion], list[str]]:
    """Read {"question": ..., "expected": "<id>" | "handoff" | null} lines (with "previous",
    the message before, for a follow-up); bad lines become warnings. null, as the project's
    own labelled sets write it, means no entry answers the question: the same as "handoff"."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise KnowledgeBaseError(f"question file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KnowledgeBaseError(f"cannot read question file {path}: {exc}") from None
    questions, warnings = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        problem, labelled = _parse(line, known_ids)
        if labelled is None:
            warnings.append(f"line {number}: {problem}; skipped")
        else:
            questions.append(labelled)
    if not questions:
        detail = f" ({warnings[0]})" if warnings else ""
        raise KnowledgeBaseError(f"{path} has no labelled questions{detail}")
    return questions, warnings


def _parse(line: str, known_ids: set[str]) -> tuple[str, LabelledQuestion | None]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return f"not valid JSON ({exc.msg})", None
    if not isinstance(value, dict):
        return 'expected an object with "question" and "expected"', None
    question, expected = value.get("question"), value.get("expected")
    if "expected" in value and expected is None:
        expected = HANDOFF  # JSON null: no entry answers it
    if not isinstance(question, str) or not question.strip():
        return "missing or empty 'question'", None
    if not isinstance(expected, str | int) or str(expected).strip() == "":
        return "missing 'expected' (an entry id, or \"handoff\" or null)", None
    expected = str(expected).strip()
    if expected != HANDOFF and expected not in known_ids:
        return f"'expected' names no entry of the FAQ: {expected!r}", None
    previous = value.get("previous")
    if previous is not None and not isinstance(previous, str):
        return "'previous' must be text (the message before this one)", None
    return "", LabelledQuestion(question.strip(), expected, previous or None)


def evaluate(kb: KnowledgeBase, questions: list[LabelledQuestion]) -> Evaluation:
    """Retrieve every question once, then count as the bot decides (with the answer check,
    when it is on) and, by the threshold rule alone, at each answer threshold."""
    found = [(q, kb.retrieve(q.question, previous=q.previous)) for q in questions]
    bands = kb.bands
    thresholds = sorted({round(t, 4) for t in (bands.answer, *SWEEP)})
    covered = [(q, r) for q, r in found if q.expected != HANDOFF]
    uncovered = [(q, r) for q, r in found if q.expected == HANDOFF]
    checked = rates_at(covered, uncovered, bands, rule=False) if kb.gate is not None else None
    return Evaluation(
        covered=len(covered),
        uncovered=len(uncovered),
        threshold=bands.answer,
        rates=[rates_at(covered, uncovered, _at(bands, t)) for t in thresholds],
        answered_uncovered=[q.question for q, r in uncovered if r.band == "answer"],
        handed_off_covered=[q.question for q, r in covered if r.band == "handoff"],
        handoff_threshold=bands.handoff,
        checked=checked,
    )


def _at(bands: Bands, answer: float) -> Bands:
    """The bands with another answer threshold (the hand-off one no higher than it)."""
    return replace(bands, answer=answer, handoff=min(bands.handoff, answer))


def decided(retrieval: Retrieval, bands: Bands, rule: bool = True) -> tuple[str, list[str]]:
    """The band and the ids offered: by the threshold rule at `bands`, or (rule=False) as
    the bot decided, answer check included."""
    if not rule:
        return retrieval.band, [hit.id for hit in retrieval.choices]
    return band_of(retrieval.hits, bands), [hit.id for hit in choices_of(retrieval.hits, bands)]


def rates_at(
    covered: list[tuple[LabelledQuestion, Retrieval]],
    uncovered: list[tuple[LabelledQuestion, Retrieval]],
    bands: Bands,
    rule: bool = True,
) -> Rates:
    """The measures if the bot used these bands (rule=False: as it decided)."""
    band = {id(r): decided(r, bands, rule) for _, r in [*covered, *uncovered]}
    right = [r.ids[:1] == [q.expected] for q, r in covered]
    direct = [band[id(r)][0] == "answer" for _, r in covered]
    resolved = [
        (ok and d) or (band[id(r)][0] == "ask" and q.expected in band[id(r)][1])
        for (q, r), d, ok in zip(covered, direct, right, strict=True)
    ]
    n, m = len(covered), len(uncovered)
    return Rates(
        threshold=bands.answer,
        top1=share(sum(right), n),
        top3=share(sum(q.expected in r.ids[:3] for q, r in covered), n),
        handoff_recall=share(sum(band[id(r)][0] != "answer" for _, r in uncovered), m),
        false_handoffs=share(sum(band[id(r)][0] == "handoff" for _, r in covered), n),
        covered_direct=share(sum(d and ok for d, ok in zip(direct, right, strict=True)), n),
        covered_resolved=share(sum(resolved), n),
        covered_wrong=share(sum(d and not ok for d, ok in zip(direct, right, strict=True)), n),
        uncovered_direct=share(sum(band[id(r)][0] == "answer" for _, r in uncovered), m),
    )


def share(hits: int, total: int) -> float:
    return hits / total if total else 0.0
