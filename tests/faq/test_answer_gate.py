"""The answer check: near-topic questions with a detail the entry does not explain are asked
back, not answered; the shipped model is what its training script writes."""

import json

import numpy as np

from bench import train_answer_gate
from chatbot.faq.answer_gate import FEATURES, AnswerGate, fit, word_match
from chatbot.faq.knowledge_base import KnowledgeBase, band_of
from tests.faq.conftest import STORE_FAQ


def test_a_detail_the_entry_does_not_explain_is_asked_back_not_answered(store_kb):
    """The issue's example: "bitcoin" scores as high as a paraphrase against the payment
    entry (the threshold alone answers it); no word of the entry explains it."""
    bitcoin = store_kb.retrieve("Can I pay with bitcoin?")
    assert bitcoin.ids[0] == "payment-methods"
    assert band_of(bitcoin.hits, store_kb.bands) == "answer"  # the threshold alone: answered
    assert bitcoin.band == "ask" and "payment-methods" in [hit.id for hit in bitcoin.choices]
    paraphrase = store_kb.retrieve("which payment methods can I use?")
    assert paraphrase.band == "answer" and paraphrase.ids[0] == "payment-methods"


def test_words_of_the_entry_are_explained_and_rare_ones_weigh_more():
    vectors = {"refunds": [1, 0], "refund": [1, 0], "bitcoin": [0, 1], "paypal": [0.6, 0.8]}

    def encode(words):
        return np.array([vectors[word] for word in words])

    counts = {"refunds": 5}
    match = word_match(
        ["refunds", "bitcoin"], ["refund", "paypal"], encode, lambda w: counts.get(w, 0), 10
    )
    assert match.similarity[0] == 1.0  # the same word (its first five letters)
    assert np.isclose(match.similarity[1], 0.8)  # its nearest word by meaning
    assert match.weight[1] > match.weight[0]  # in no entry: rarer than one in half of them


def test_fit_learns_the_direction_of_a_separable_input():
    x = np.array([[0.1, 5.0], [0.2, 5.0], [0.8, 5.0], [0.9, 5.0]])
    y = np.array([0.0, 0.0, 1.0, 1.0])
    weights, bias, mean, scale = fit(x, y)
    gate = AnswerGate(mean, scale, weights.tolist(), bias, 0.5, "test")
    assert gate.passes(np.array([0.85, 5.0])) and not gate.passes(np.array([0.15, 5.0]))
    assert scale[1] == 1.0  # a constant input is left as it is, not divided by zero


def test_a_threshold_set_by_hand_leaves_the_threshold_alone_to_decide(index_dir):
    with KnowledgeBase.open(STORE_FAQ, index_dir=index_dir, confidence=0.5) as kb:
        assert kb.gate is None
        bitcoin = kb.retrieve("Can I pay with bitcoin?")
        assert bitcoin.band == band_of(bitcoin.hits, kb.bands) == "answer"
        assert "_known_words" not in vars(kb)  # the check's word vectors were never read


def test_the_check_runs_once_per_turn_on_the_reading_it_decides(store_kb, monkeypatch):
    """A follow-up is looked up alone and with the message before; only the reading taken
    is checked. A search for a pick named in words is judged by the score alone."""
    checked = []
    features = store_kb._features

    def counted(terms, hits):
        checked.append(terms)
        return features(terms, hits)

    monkeypatch.setattr(store_kb, "_features", counted)
    turn = store_kb.retrieve("and for PayPal?", previous="How long does my refund take?")
    assert turn.band != "handoff" and len(checked) == 1
    assert store_kb.search("the one about refunds", k=len(store_kb.entries))
    assert len(checked) == 1


def test_a_gate_file_for_other_inputs_is_not_used(tmp_path):
    shipped = json.loads(train_answer_gate.GATE_FILE.read_text())
    assert shipped["features"] == list(FEATURES) and AnswerGate.load() is not None
    shipped["features"] = shipped["features"][:-1]
    (tmp_path / "old.json").write_text(json.dumps(shipped))
    assert AnswerGate.load(tmp_path / "old.json") is None
    assert AnswerGate.load(tmp_path / "missing.json") is None


def test_the_shipped_check_is_what_its_training_writes(capsys):
    """bench/train_answer_gate.py retrains on the eight training knowledge bases."""
    assert train_answer_gate.main(["--check"]) == 0, capsys.readouterr().out
