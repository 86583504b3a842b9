"""Measuring retrieval on labelled questions: how a company sets the hand-off threshold.

A threshold chosen on one knowledge base does not carry over to another (bench/faq_bench.py
shows it on two), so `chatbot faq-eval` runs the same measures on the user's own questions:
top-1 accuracy, top-3 recall, hand-off recall on questions the FAQ does not cover and false
hand-offs on questions it does, at the current threshold and swept over others.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from chatbot.errors import KnowledgeBaseError
from chatbot.faq.knowledge_base import KnowledgeBase, Retrieval, answers

HANDOFF = "handoff"  # the `expected` value of a question the FAQ does not cover
SWEEP = (0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60)


@dataclass(frozen=True)
class LabelledQuestion:
    question: str
    expected: str  # an entry id, or HANDOFF
    previous: str | None = None  # the customer's message before, for a follow-up


@dataclass(frozen=True)
class Rates:
    """The four measures at one threshold (each 0..1; 0 when there is nothing to count)."""

    threshold: float
    top1: float
    top3: float
    handoff_recall: float
    false_handoffs: float


@dataclass(frozen=True)
class Evaluation:
    covered: int
    uncovered: int
    threshold: float  # the knowledge base's, in use
    rates: list[Rates]  # at the threshold in use and at each of SWEEP, lowest first
    answered_uncovered: list[str]  # at the current threshold: the bot answered, should not have
    handed_off_covered: list[str]  # at the current threshold: the bot handed off, should not have

    @property
    def in_use(self) -> Rates:
        """The measures at the threshold in use."""
        return min(self.rates, key=lambda rates: abs(rates.threshold - self.threshold))


def load_questions(path: Path, known_ids: set[str]) -> tuple[list[LabelledQuestion], list[str]]:
    """Read {"question": ..., "expected": "<id>" | "handoff"} lines (with "previous", the
    message before, for a follow-up); bad lines become warnings."""
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
    if not isinstance(question, str) or not question.strip():
        return "missing or empty 'question'", None
    if not isinstance(expected, str | int) or str(expected).strip() == "":
        return "missing 'expected' (an entry id, or \"handoff\")", None
    expected = str(expected).strip()
    if expected != HANDOFF and expected not in known_ids:
        return f"'expected' names no entry of the FAQ: {expected!r}", None
    previous = value.get("previous")
    if previous is not None and not isinstance(previous, str):
        return "'previous' must be text (the message before this one)", None
    return "", LabelledQuestion(question.strip(), expected, previous or None)


def evaluate(kb: KnowledgeBase, questions: list[LabelledQuestion]) -> Evaluation:
    """Retrieve every question once, then count at each threshold."""
    found = [(q, kb.retrieve(q.question, previous=q.previous)) for q in questions]
    thresholds = sorted({round(t, 4) for t in (kb.confidence, *SWEEP)})
    covered = [(q, r) for q, r in found if q.expected != HANDOFF]
    uncovered = [(q, r) for q, r in found if q.expected == HANDOFF]
    return Evaluation(
        covered=len(covered),
        uncovered=len(uncovered),
        threshold=kb.confidence,
        rates=[rates_at(covered, uncovered, t) for t in thresholds],
        answered_uncovered=[q.question for q, r in uncovered if answers(r.hits, kb.confidence)],
        handed_off_covered=[q.question for q, r in covered if not answers(r.hits, kb.confidence)],
    )


def rates_at(
    covered: list[tuple[LabelledQuestion, Retrieval]],
    uncovered: list[tuple[LabelledQuestion, Retrieval]],
    threshold: float,
) -> Rates:
    """The four measures if the bot answered from entries scoring at least `threshold`."""
    return Rates(
        threshold=threshold,
        top1=share(sum(r.ids[:1] == [q.expected] for q, r in covered), len(covered)),
        top3=share(sum(q.expected in r.ids[:3] for q, r in covered), len(covered)),
        handoff_recall=share(
            sum(not answers(r.hits, threshold) for _, r in uncovered), len(uncovered)
        ),
        false_handoffs=share(sum(not answers(r.hits, threshold) for _, r in covered), len(covered)),
    )


def share(hits: int, total: int) -> float:
    return hits / total if total else 0.0
