"""The FAQ bot on the command line: opening the knowledge base (its thresholds printed on start),
the policy with its answer mode, the bot's counts for `stats` and `handoffs`, `faq-eval`'s table.

Imported only by the commands that use a knowledge base or print its counts.
"""

import argparse
import sys
from typing import TYPE_CHECKING

from chatbot.faq.knowledge_base import KnowledgeBase
from chatbot.faq.policy import FaqPolicy

if TYPE_CHECKING:
    from chatbot.faq.evaluation import Evaluation
    from chatbot.store.records import FaqCounts


def open_knowledge_base(args: argparse.Namespace) -> KnowledgeBase | None:
    """The --faq knowledge base; its warnings and the thresholds in use go to stderr."""
    if args.faq is None:
        return None
    options = {"confidence": args.faq_confidence, "handoff_reply": args.handoff_reply}
    kb = KnowledgeBase.open(args.faq, **{k: v for k, v in options.items() if v is not None})
    for warning in kb.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"note: {kb.describe()}", file=sys.stderr)
    return kb


def faq_policy(kb: KnowledgeBase | None, args: argparse.Namespace) -> FaqPolicy | None:
    """The FAQ bot's policy with --faq-answer; None (plain chat) without a knowledge base."""
    if kb is None:
        return None
    return FaqPolicy(kb, getattr(args, "faq_answer", None) or "auto")


def faq_count_lines(counts: "FaqCounts") -> list[str]:
    """The FAQ bot's replies by kind and what came of its ask-backs; [] when it has none."""
    if not (counts.answered or counts.asked_back or counts.handoffs):
        return []
    asked = counts.asked_back
    return [
        "FAQ bot:",
        f"  answers from an entry: {counts.answered} ({counts.quoted} the article's own text)",
        f"  ask-backs: {asked}: {counts.picked} picked a choice, {counts.declined} said none "
        f"(handed off), {counts.handed_off_after} still unclear (handed off), "
        f"{counts.new_question} asked something else, {counts.open} not answered yet",
        f"  hand-offs: {counts.handoffs} ({counts.handoffs_declined} declined by the customer)",
    ]


def print_faq_eval(result: "Evaluation") -> None:
    """`faq-eval`'s table: each band's measures as the bot decides, and by the threshold
    rule alone with the answer threshold swept (what --faq-confidence would do)."""
    upper = "up (the answer check)" if result.checked is not None else "to the answer threshold"
    print(f"{result.covered} covered and {result.uncovered} uncovered questions; asks back "
          f"from {result.handoff_threshold:.2f} {upper}")  # fmt: skip
    print("answer at  top-1  top-3  uncovered answered  covered answered  resolved  handed off")
    rows = [("  check", result.checked)] if result.checked is not None else []
    rows += [(f"{r.threshold:>7.2f}", r) for r in result.rates]
    for label, r in rows:
        mark = "  <- in use" if r is result.in_use else ""
        print(f"{label:>9}  {r.top1:5.3f}  {r.top3:5.3f}  {r.uncovered_direct:>18.3f}  "
              f"{r.covered_direct:>16.3f}  {r.covered_resolved:>8.3f}  "
              f"{r.false_handoffs:>10.3f}{mark}")  # fmt: skip
    if result.checked is not None:
        print(
            "check: the answer check decides between asking back and answering "
            "(chatbot.faq.answer_gate); the rows below are the threshold alone, as "
            "--faq-confidence sets it"
        )
    for label, missed in (
        ("answered, should not have", result.answered_uncovered),
        ("handed off, should answer", result.handed_off_covered),
    ):
        for question in missed:
            print(f"{label}: {question}")
