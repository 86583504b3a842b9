"""Knowledge bases shared by the FAQ tests: built once per run (the encoder pass is the cost)."""

import json
from pathlib import Path

import pytest

from chatbot.faq.knowledge_base import KnowledgeBase
from tests.faq import helpdesk

REPO = Path(__file__).resolve().parents[2]
STORE_FAQ = REPO / "data/faq/store_faq.jsonl"
STORE_EVAL = REPO / "data/eval/faq_eval.jsonl"
HELPDESK_EVAL = REPO / "data/eval/helpdesk_eval.jsonl"
FOLLOW_UPS = REPO / "data/eval/faq_followups.jsonl"


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faq-index")


@pytest.fixture(scope="session")
def store_kb(index_dir):
    with KnowledgeBase.open(STORE_FAQ, index_dir=index_dir) as kb:
        yield kb


@pytest.fixture(scope="session")
def helpdesk_kb(tmp_path_factory, index_dir):
    path = tmp_path_factory.mktemp("helpdesk") / "helpdesk.jsonl"
    path.write_text("".join(json.dumps(entry) + "\n" for entry in helpdesk.ENTRIES))
    with KnowledgeBase.open(path, index_dir=index_dir) as kb:
        yield kb
