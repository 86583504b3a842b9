"""Retrieval and hand-off: another domain, hostile text, grounding, and the shipped targets."""

import json
import threading

import pytest

from chatbot.faq.evaluation import evaluate, load_questions
from chatbot.faq.index import query_terms
from chatbot.faq.knowledge_base import FaqHit, KnowledgeBase
from chatbot.faq.policy import grounded_user_message
from tests.faq import helpdesk
from tests.faq.conftest import FOLLOW_UPS, HELPDESK_EVAL, STORE_EVAL

# Text a customer might type that is FTS5 syntax, or breaks a naive MATCH string.
HOSTILE = [
    '"',
    '""',
    '"unterminated quote',
    "return AND refund",
    "AND",
    "OR",
    "NOT",
    "NOT refund",
    "refund NOT",
    "NEAR(order refund)",
    "NEAR",
    "order NEAR/3 refund",
    "refund*",
    "*",
    "**",
    "(",
    ")",
    "(refund OR (return",
    "-",
    "- refund",
    "refund -shipping",
    "^refund",
    "^",
    "question: refund",
    "answer : where",
    "{question alternates}: refund",
    "col:umn:colon",
    "refund + shipping",
    "'single' `back` \\slash",
    "a.b.c?!;,",
    "@#$%&|~=<>[]",
    "",
    "   ",
    "\n\t",
    "\x00",
    "the of and to",  # stopwords only
    "🤔📦 where is my 📦",
    "où est ma commande?",
    "退货政策",
    "x" * 5000,
    "order " * 400,
    " ".join(f"word{i} NEAR(" for i in range(3000)),
    "DROP TABLE faq_fts; --",
    "' OR 1=1 --",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_fts5_syntax_in_user_text_never_raises(store_kb, text):
    retrieval = store_kb.retrieve(text)
    assert isinstance(retrieval.confident, bool)
    assert all(isinstance(hit, FaqHit) for hit in retrieval.hits)


def test_query_terms_keep_only_content_words():
    assert query_terms('How do I "return" (AND refund) my ORDER*?') == ["return", "refund", "order"]
    assert query_terms("NEAR/3 NOT - ^ :") == ["near", "3"]
    assert query_terms("what is it?") == []


def resolves(retrieval, expected: str) -> bool:
    """Answered from the right entry, or the right entry among the ask-back's choices."""
    if retrieval.confident:
        return retrieval.ids[:1] == [expected]
    return retrieval.band == "ask" and expected in [hit.id for hit in retrieval.choices]


def test_another_domain_retrieves_paraphrases_and_hands_off_unrelated(helpdesk_kb):
    """An IT helpdesk FAQ written apart from the store FAQ: nothing is tuned to the sample."""
    top1 = [helpdesk_kb.retrieve(q).ids[:1] == [expected] for q, expected in helpdesk.COVERED]
    top3 = [expected in helpdesk_kb.retrieve(q).ids for q, expected in helpdesk.COVERED]
    resolved = [resolves(helpdesk_kb.retrieve(q), expected) for q, expected in helpdesk.COVERED]
    handed_off = [not helpdesk_kb.retrieve(q).confident for q in helpdesk.UNCOVERED]
    assert sum(top1) / len(top1) >= 0.85, top1
    assert sum(top3) / len(top3) >= 0.9, top3
    assert sum(resolved) / len(resolved) >= 0.9, resolved
    assert all(handed_off), handed_off


def test_another_domain_ranks_its_longer_question_set(helpdesk_kb):
    """data/eval/helpdesk_eval.jsonl: 30 covered questions, many long or about one detail."""
    rows = [json.loads(line) for line in HELPDESK_EVAL.read_text().splitlines() if line.strip()]
    covered = [r for r in rows if r["expected"] != "handoff"]
    assert {r["expected"] for r in covered} == {entry.id for entry in helpdesk_kb.entries}
    ranked = [helpdesk_kb.retrieve(r["question"]).ids for r in covered]
    top1 = sum(ids[:1] == [r["expected"]] for ids, r in zip(ranked, covered, strict=True))
    top3 = sum(r["expected"] in ids for ids, r in zip(ranked, covered, strict=True))
    assert top1 / len(covered) >= 0.90 and top3 / len(covered) >= 0.97, (top1, top3)


def test_hits_are_best_first_with_bounded_scores(store_kb):
    retrieval = store_kb.retrieve("When will I get my money back after returning my boots?", k=3)
    assert retrieval.sources[0] == "refund-timing"
    scores = [hit.score for hit in retrieval.hits]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert store_kb.retrieve("x", k=1).hits[:1] == store_kb.retrieve("x", k=1).hits


def test_words_only_mode_still_retrieves(tmp_path):
    path = tmp_path / "kb.jsonl"
    lines = [
        {"id": "hours", "question": "When is the gym open?", "answer": "6 am to 10 pm daily."},
        {"id": "towel", "question": "Do you rent towels?", "answer": "Towels cost $2."},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with KnowledgeBase.open(path, index_dir=tmp_path, semantic=False) as kb:
        assert kb.retrieve("what are the gym opening hours").sources[0] == "hours"
        assert kb.retrieve("can I rent a towel").confident
        assert not kb.retrieve("how do I cancel my membership").confident


def test_retrieval_from_several_threads(store_kb):
    """The app retrieves from worker threads; one index is shared."""
    errors: list[BaseException] = []

    def worker():
        try:
            for _ in range(5):
                assert store_kb.retrieve("how long do refunds take").hits
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_grounded_message_quotes_the_best_entry_after_the_question(store_kb):
    retrieval = store_kb.retrieve("How long does a refund take?")
    best = retrieval.hits[0]
    message = grounded_user_message("  How long does a refund take? ", retrieval.hits)
    assert message.startswith("How long does a refund take?\n\n")
    assert message.endswith(f'keep its numbers, prices, times and names exactly:\n"{best.answer}"')
    assert retrieval.sources == [best.id]
    assert all(hit.answer not in message for hit in retrieval.hits[1:])
    assert retrieval.ids == [hit.id for hit in retrieval.hits]


def test_custom_handoff_reply(tmp_path):
    path = tmp_path / "kb.csv"
    path.write_text("id,question,answer\nhours,When are you open?,9 to 5.\n")
    with KnowledgeBase.open(path, index_dir=tmp_path, handoff_reply="Call Sam.") as kb:
        assert kb.handoff_reply == "Call Sam."


def _shipped_eval(kb: KnowledgeBase) -> dict[str, float]:
    ids = {entry.id for entry in kb.entries}
    questions, warnings = load_questions(STORE_EVAL, ids)
    assert warnings == []
    result = evaluate(kb, questions)
    rates = result.in_use
    return {
        "covered": result.covered,
        "uncovered": result.uncovered,
        "top1": rates.top1,
        "top3": rates.top3,
        "false_handoff": rates.false_handoffs,
    }


@pytest.fixture(scope="module")
def shipped(store_kb):
    return _shipped_eval(store_kb)


def test_shipped_eval_set_is_large_enough_and_names_real_entries(store_kb, shipped):
    assert shipped["covered"] >= 80 and shipped["uncovered"] >= 20
    ids = {entry.id for entry in store_kb.entries}
    assert "handoff" not in ids
    rows = [json.loads(line) for line in STORE_EVAL.read_text().splitlines() if line.strip()]
    assert {r["expected"] for r in rows} - {"handoff"} <= ids


def test_shipped_eval_retrieval_targets(shipped):
    assert shipped["top1"] >= 0.90, shipped
    assert shipped["top3"] >= 0.97, shipped
    assert shipped["false_handoff"] <= 0.05, shipped


def test_a_short_follow_up_is_read_with_the_message_before(store_kb):
    follow_up = store_kb.retrieve("What if it already shipped?", previous="Can I cancel my order?")
    assert follow_up.ids[0] == "order-cancel" and follow_up.confident
    # A new, self-contained question matches better on its own.
    switch = store_kb.retrieve(
        "How do I change the email address on my account?", previous="How long do refunds take?"
    )
    assert switch.ids[0] == "account-change-email"
    # A long message is never joined with the one before.
    long = "I would like to know which payment methods you accept for orders shipped abroad"
    assert store_kb.retrieve(long, previous="Hi").ids == store_kb.retrieve(long).ids


def test_follow_up_evaluation_set_gains_from_the_message_before(store_kb):
    rows = [json.loads(line) for line in FOLLOW_UPS.read_text().splitlines() if line.strip()]
    assert len(rows) >= 40 and all(r["previous"] for r in rows)
    covered = [r for r in rows if r["expected"] != "handoff"]
    alone = [store_kb.retrieve(r["question"]).ids[:1] == [r["expected"]] for r in covered]
    joined = [
        store_kb.retrieve(r["question"], previous=r["previous"]).ids[:1] == [r["expected"]]
        for r in covered
    ]
    assert sum(joined) / len(covered) >= 0.8 and sum(alone) / len(covered) < 0.6
