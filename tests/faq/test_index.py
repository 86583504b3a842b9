"""The cached index: where it lives, when it is rebuilt, and the encoder behind it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from chatbot.faq.embed import model_zip
from chatbot.faq.index import (
    ANSWER_SENTENCE_CREDIT,
    SEMANTIC_SHARE,
    answer_sentences,
    index_file_for,
)
from chatbot.faq.knowledge_base import KnowledgeBase


def write_kb(path, entries):
    path.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    return path


GYM = [
    {"id": "hours", "question": "When is the gym open?", "answer": "6 am to 10 pm daily."},
    {"id": "towels", "question": "Do you rent towels?", "answer": "Towels cost $2."},
]


def test_index_is_reused_then_rebuilt_when_the_file_changes(tmp_path):
    faq = write_kb(tmp_path / "gym.jsonl", GYM)
    with KnowledgeBase.open(faq, index_dir=tmp_path / "idx") as kb:
        assert kb.index.rebuilt
        assert kb.index.path == index_file_for(faq, tmp_path / "idx")
        assert kb.index.path.is_file()
    with KnowledgeBase.open(faq, index_dir=tmp_path / "idx") as kb:
        assert not kb.index.rebuilt
    sauna = {"id": "sauna", "question": "Is there a sauna?", "answer": "Yes, on floor 2."}
    write_kb(faq, [*GYM, sauna])
    with KnowledgeBase.open(faq, index_dir=tmp_path / "idx") as kb:
        assert kb.index.rebuilt
        assert kb.retrieve("does the gym have a sauna").sources[0] == "sauna"
    assert [p.name for p in (tmp_path / "idx").iterdir()] == [kb.index.path.name]


def test_a_damaged_index_file_is_rebuilt(tmp_path):
    faq = write_kb(tmp_path / "gym.jsonl", GYM)
    index_file_for(faq, tmp_path).write_bytes(b"not a database")
    with KnowledgeBase.open(faq, index_dir=tmp_path) as kb:
        assert kb.index.rebuilt
        assert kb.retrieve("towel rental price").sources[0] == "towels"


def test_default_index_folder_is_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATBOT_CACHE_DIR", str(tmp_path / "cache"))
    faq = write_kb(tmp_path / "gym.jsonl", GYM)
    with KnowledgeBase.open(faq, semantic=False) as kb:
        assert kb.index.path.parent == tmp_path / "cache" / "faq-index"


def test_unwritable_cache_falls_back_to_a_temporary_index(tmp_path):
    faq = write_kb(tmp_path / "gym.jsonl", GYM)
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("")
    with KnowledgeBase.open(faq, index_dir=blocker / "idx", semantic=False) as kb:
        assert kb.index.path is None
        assert any("cannot write the FAQ index" in w for w in kb.warnings)
        assert kb.retrieve("gym opening times").sources[0] == "hours"


def test_encoder_matches_the_reference_bert(tmp_path, store_kb):
    """MiniLM in llama.cpp (Q8_0) gives the sentence vectors of transformers' BertModel."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import zipfile

    with zipfile.ZipFile(model_zip()) as archive:
        archive.extractall(tmp_path)
    model = transformers.BertModel.from_pretrained(tmp_path).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    texts = ["Where is my order?", "How long do refunds take to reach my bank?", "hi"]
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1)
        reference = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    ours = store_kb.encoder.encode(texts)
    assert (ours * reference.numpy()).sum(axis=1).min() > 0.999  # cosine, vector by vector
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_faq_modules_import_neither_torch_nor_transformers():
    code = (
        "import sys; from chatbot.faq.knowledge_base import KnowledgeBase; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "[]", out.stderr


def test_answer_sentences_split_at_sentence_ends_and_semicolons():
    answer = "Passwords expire every 90 days. Change it at password.acme.example; it needs 14!"
    assert answer_sentences(answer) == [
        "Passwords expire every 90 days.",
        "Change it at password.acme.example;",
        "it needs 14!",
    ]


def test_a_question_about_one_detail_of_an_answer_finds_its_entry(tmp_path):
    """The detail is in no entry's question: the answer's own sentences find it, discounted."""
    entries = [
        *GYM,
        {
            "id": "lockers",
            "question": "Can I keep my things in a locker?",
            "answer": "Lockers are free during your visit. Bring your own padlock; we sell "
            "padlocks at the front desk for $5.",
        },
    ]
    with KnowledgeBase.open(write_kb(tmp_path / "gym.jsonl", entries), index_dir=tmp_path) as kb:
        detail = kb.retrieve("Where can I buy a padlock?")
        assert detail.ids[0] == "lockers"
        own = kb.retrieve("Can I keep my things in a locker?").hits[0].score
        quoted = kb.retrieve("Lockers are free during your visit.").hits[0].score
    # A question word for word: the full semantic share; an answer sentence: its credit.
    assert own == pytest.approx(SEMANTIC_SHARE + (1 - SEMANTIC_SHARE), abs=1e-3)
    assert quoted < own
    assert quoted >= SEMANTIC_SHARE * ANSWER_SENTENCE_CREDIT - 1e-3
