"""`chatbot ask` across turns of the FAQ bot: an ask-back in JSON, "no" gets the hand-off, bad
picks get a clear reply or error; `stats` and `handoffs` count what happened.

Real subprocesses over a real database, a tiny llama.cpp model (loaded, never asked: the
`quote` answer mode answers with the article's own text) and the store FAQ.
"""

import json
import os
import subprocess
import sys

import pytest

from chatbot.faq.knowledge_base import DEFAULT_HANDOFF_REPLY
from tests.chatbot.tiny_gguf import build_tiny_chat_gguf
from tests.faq.conftest import STORE_FAQ

ASKS_BACK = "help with my order"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_chat_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture
def ask(tiny, tmp_path):
    db = tmp_path / "chat.db"
    common = ("--faq", STORE_FAQ, "--faq-answer", "quote", "--model", tiny, "--db", db)

    def run(*args: object, command: str = "ask") -> subprocess.CompletedProcess:
        extra = common if command == "ask" else ("--db", db)
        return subprocess.run(
            [sys.executable, "-m", "chatbot.cli", command, *map(str, (*extra, *args))],
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ),
        )

    return run


def as_json(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_an_ask_back_then_no_gets_the_handoff(ask):
    asked = as_json(ask("--json", ASKS_BACK))
    assert asked["band"] == "ask_back" and not asked["handoff"] and asked["sources"] == []
    assert [set(c) for c in asked["clarify"]] == [{"id", "question"}] * 3
    assert all(f"{c['question']}" in asked["answer"] for c in asked["clarify"])
    conversation = str(asked["conversation_id"])
    declined = as_json(ask("--json", "--conversation", conversation, "no"))
    assert declined["handoff"] and declined["answer"] == DEFAULT_HANDOFF_REPLY
    assert declined["clarify"] == []
    handoffs = as_json(ask("--json", command="handoffs"))
    listed = [(h["question"], h["reply"], h["conversation_id"]) for h in handoffs]
    assert listed == [(ASKS_BACK, "no", int(conversation))]
    shown = ask(command="stats")
    assert shown.returncode == 0, shown.stderr
    assert "ask-backs: 1: 0 picked a choice, 1 said none (handed off)" in shown.stdout


def test_a_person_answers_a_handoff_from_the_command_line(ask):
    conversation = str(as_json(ask("--json", ASKS_BACK))["conversation_id"])
    ask("--json", "--conversation", conversation, "no")
    handoff = as_json(ask("--json", command="handoffs"))[0]["message_id"]
    alone = ask("--reply", "Hello", command="handoffs")
    assert (alone.returncode, alone.stderr) == (2, "error: --reply needs --resolve ID: "
                                                   "the hand-off it answers\n")  # fmt: skip
    empty = ask("--resolve", handoff, "--reply", " ", command="handoffs")
    assert empty.returncode == 2 and empty.stderr.startswith("error: the reply is empty")
    done = ask("--resolve", handoff, "--reply", "Sam here: which order is it?", command="handoffs")
    assert done.returncode == 0, done.stderr
    assert "is resolved; your reply is in the conversation" in done.stdout
    exported = ask(conversation, command="export")
    assert exported.stdout.rstrip().endswith("## Support team\n\nSam here: which order is it?")
    assert "resolved" in ask(command="handoffs").stdout


def test_a_pick_by_number_in_text_mode(ask):
    asked = ask(ASKS_BACK)
    assert asked.returncode == 0 and "Did you mean" in asked.stdout
    assert "note: asked back; continue with --conversation 1" in asked.stderr
    assert "note: FAQ thresholds: answer at" in asked.stderr  # printed on start
    picked = as_json(ask("--json", "--conversation", 1, "2"))
    assert picked["band"] == "answer" and len(picked["sources"]) == 1
    assert picked["quoted"] == "setting" and picked["answer"].startswith("From our help article")


def test_bad_picks_get_a_clear_reply_or_error_and_nothing_is_lost(ask):
    as_json(ask("--json", ASKS_BACK))
    again = as_json(ask("--json", "--conversation", 1, "7"))
    assert again["answer"].startswith("There is no choice 7.") and len(again["clarify"]) == 3
    elsewhere = as_json(ask("--json", "2"))  # a new conversation has no ask-back open
    assert elsewhere["conversation_id"] == 2 and not elsewhere["handoff"]
    assert "no list of choices open" in elsewhere["answer"]
    missing = ask("--conversation", 99, "1")
    assert missing.returncode == 2 and missing.stderr.startswith("error: no conversation 99")
    empty = ask("--conversation", 1, "   ")
    assert empty.returncode == 2 and empty.stderr.strip().splitlines()[-1].startswith("error: ")
    picked = as_json(ask("--json", "--conversation", 1, "1"))  # the ask-back is still open
    assert picked["band"] == "answer" and picked["sources"] == [again["clarify"][0]["id"]]
    exported = ask(1, "--format", "json", command="export")
    assert exported.returncode == 0, exported.stderr
    said = [m["content"] for m in json.loads(exported.stdout)["messages"] if m["role"] == "user"]
    assert said == [ASKS_BACK, "7", "1"]
