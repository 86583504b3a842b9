"""A turn sent again (regenerated, or edited and resent) and per-conversation settings: the
store keeps the replaced turn as an alternative, out of the conversation and its prompts."""

import sqlite3

import pytest

from chatbot.conversation.export import export_conversation
from chatbot.conversation.session import Session, TurnResult
from chatbot.engines.base import GenerationOptions
from chatbot.engines.llama import LlamaEngine
from chatbot.errors import ChatbotError
from chatbot.store.records import ConversationSettings

OPTS = GenerationOptions(max_tokens=6, temperature=0.9)


@pytest.fixture(scope="module")
def engine(tiny_gguf):
    e = LlamaEngine(tiny_gguf, n_ctx=2048, n_threads=1)
    yield e
    e.close()


def last(items) -> TurnResult:
    assert isinstance(items[-1], TurnResult)
    return items[-1]


def test_regenerate_keeps_the_earlier_reply_as_an_alternative(engine, store, db_path):
    session = Session(engine, store, options=OPTS)
    last(list(session.send("First question")))
    first = last(list(session.send("Second question")))
    again = last(list(session.retry()))
    shown = store.messages(session.conversation_id)
    assert [m.role for m in shown] == ["user", "assistant", "user", "assistant"]
    assert [shown[2].content, shown[3].id] == ["Second question", again.assistant_message_id]
    kept = store.alternatives(session.conversation_id)
    assert [m.id for m in kept] == [first.user_message_id, first.assistant_message_id]
    assert all(m.replaced_at for m in kept)
    rows = sqlite3.connect(db_path).execute(
        "SELECT id, replaced_at IS NOT NULL FROM messages WHERE role = 'assistant' ORDER BY id"
    )
    assert [flag for _, flag in rows] == [0, 1, 0], "both replies are in the database"
    exported = export_conversation(store, session.conversation_id, "json")
    assert exported.count("Second question") == 1, "the export shows the conversation as it stands"


def test_edit_and_resend_replaces_the_last_turn_and_its_prompt(engine, store):
    session = Session(engine, store, options=OPTS)
    last(list(session.send("What is the capital of Frnace?")))
    edited = last(list(session.retry("What is the capital of France?")))
    shown = store.messages(session.conversation_id)
    assert [m.content for m in shown] == ["What is the capital of France?", edited.answer]
    assert store.alternatives(session.conversation_id)[0].content.endswith("Frnace?")
    assert len(store.turns(session.conversation_id)) == 2, "both replies keep their latency row"


def test_retry_needs_a_message_and_refuses_an_empty_edit(engine, store):
    session = Session(engine, store, options=OPTS)
    with pytest.raises(ChatbotError, match="no message to send again"):
        list(session.retry())
    last(list(session.send("Hello")))
    with pytest.raises(ChatbotError, match="empty"):
        list(session.retry("  "))
    assert len(store.messages(session.conversation_id)) == 2, "nothing was set aside"


def test_recent_prompts_are_newest_first_and_distinct(store):
    a = store.new_conversation("a").id
    b = store.new_conversation("b").id
    for cid, text in ((a, "one"), (b, "two"), (a, "one"), (b, "three")):
        store.add_message(cid, "user", text)
        store.add_message(cid, "assistant", "ok")
    assert store.recent_prompts() == ["three", "one", "two"]


def test_settings_round_trip_and_go_with_the_conversation(store):
    cid = store.new_conversation("x", system_prompt="Be brief.").id
    assert store.settings(cid) == ConversationSettings(system_prompt="Be brief.")
    chosen = ConversationSettings(
        system_prompt="Talk like a pirate.",
        model_file="tiny.gguf",
        temperature=0.0,
        max_tokens=12,
        mode="chat",
    )
    store.save_settings(cid, chosen)
    assert store.settings(cid) == chosen
    assert store.get_conversation(cid).system_prompt == "Talk like a pirate."
    store.save_settings(cid, ConversationSettings())
    assert store.settings(cid) == ConversationSettings()
    store.save_settings(cid, chosen)
    store.delete_conversation(cid)
    count = store.db.execute("SELECT COUNT(*) FROM conversation_settings").fetchone()[0]
    assert count == 0, "deleting the conversation deletes its settings"
