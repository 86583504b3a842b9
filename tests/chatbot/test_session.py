"""Session: validation, saving before/after generation, stopping, context limits, FAQ mode."""

import json
from pathlib import Path

import pytest

from chatbot.conversation.export import export_conversation
from chatbot.conversation.repetition import RepetitionGuard
from chatbot.conversation.session import Notice, Session, TurnResult, clean_text, title_from
from chatbot.engines.base import GenerationOptions, TextChunk
from chatbot.engines.llama import LlamaEngine
from chatbot.errors import ChatbotError
from chatbot.faq.facts import unsupported_facts
from chatbot.faq.knowledge_base import DEFAULT_REQUESTED_REPLY, KnowledgeBase
from chatbot.faq.policy import FaqPolicy
from chatbot.faq.small_talk import GREETING_REPLY, THANKS_REPLY

OPTS = GenerationOptions(max_tokens=6, temperature=0.0)


@pytest.fixture(scope="module")
def engine(tiny_gguf):
    e = LlamaEngine(tiny_gguf, n_ctx=4096, n_threads=1)
    yield e
    e.close()


@pytest.fixture(scope="module")
def small_engine(tiny_gguf):
    e = LlamaEngine(tiny_gguf, n_ctx=256, n_threads=1)
    yield e
    e.close()


def send(session, text, should_stop=lambda: False):
    items = list(session.send(text, should_stop))
    assert isinstance(items[-1], TurnResult)
    return items


def test_clean_text_keeps_newlines_and_tabs_only():
    assert clean_text("\x1b[31mred\x1b[0m\x07 a\x00b\r\nc\td\x7f\u200b") == "red ab\nc\td\u200b"
    assert clean_text(" \x00\x01 \n ") == ""
    assert title_from("first line\nsecond") == "first line"
    assert len(title_from("x" * 500)) == 60


@pytest.mark.parametrize("text", ["", "   ", "\n\t\n", "\x00\x1b[2J\x07"])
def test_empty_message_is_refused_and_nothing_saved(engine, store, text):
    session = Session(engine, store, options=OPTS)
    with pytest.raises(ChatbotError, match="empty"):
        list(session.send(text))
    assert store.list_conversations() == []


def test_turn_saves_user_first_then_reply_and_latency(engine, store):
    session = Session(engine, store, system_prompt="Be kind.", options=OPTS)
    seen_during = None
    for item in session.send("Hello \x1b[1mthere\x07"):
        if isinstance(item, TextChunk) and seen_during is None:
            seen_during = [m.content for m in store.messages(session.conversation_id)]
        last = item
    assert seen_during == ["Hello there"]  # saved before the first token
    assert isinstance(last, TurnResult) and not last.stopped and not last.handoff
    conv = store.get_conversation(last.conversation_id)
    assert conv.title == "Hello there" and conv.system_prompt == "Be kind."
    assert conv.model == engine.info.model
    user, reply = store.messages(last.conversation_id)
    assert (user.id, reply.id) == (last.user_message_id, last.assistant_message_id)
    assert reply.content == last.answer and reply.role == "assistant"
    (turn,) = store.turns(last.conversation_id)
    assert turn.message_id == reply.id and turn.id == last.turn_id
    assert turn.prompt_tokens == last.stats.prompt_tokens > 0
    assert turn.completion_tokens == last.stats.completion_tokens
    assert turn.model_file == engine.info.model and turn.quantization == "F32"
    assert turn.threads == 1 and turn.cpu_seconds > 0 and turn.stop_reason == last.stats.stop_reason


def test_second_turn_reuses_the_cache_and_resumed_session_sees_history(engine, store):
    session = Session(engine, store, options=OPTS)
    first = send(session, "one")[-1]
    second = send(session, "two")[-1]
    assert second.stats.cached_tokens >= first.stats.prompt_tokens
    resumed = Session(engine, store, conversation_id=first.conversation_id, options=OPTS)
    third = send(resumed, "three")[-1]
    assert third.stats.prompt_tokens > second.stats.prompt_tokens
    assert [m.content for m in store.messages(first.conversation_id)][::2] == [
        "one",
        "two",
        "three",
    ]


def test_stop_keeps_the_partial_reply_marked_stopped(engine, store):
    session = Session(
        engine, store, options=GenerationOptions(max_tokens=50, temperature=1.0, seed=7)
    )
    chunks = 0

    def should_stop():
        return chunks >= 2

    for item in session.send("tell me a long story", should_stop):
        if isinstance(item, TextChunk):
            chunks += 1
        result = item
    assert result.stopped and result.stats.stop_reason == "cancelled"
    reply = store.messages(result.conversation_id)[-1]
    assert reply.stopped and reply.content == result.answer
    assert store.turns(result.conversation_id)[-1].stop_reason == "cancelled"


def test_abandoned_stream_still_saves_what_was_generated(engine, store):
    """The app's worker may be torn down mid-reply: closing the generator saves the text."""
    session = Session(
        engine, store, options=GenerationOptions(max_tokens=50, temperature=1.0, seed=7)
    )
    stream = session.send("abandon me")
    got = ""
    for item in stream:
        if isinstance(item, TextChunk):
            got += item.text
            break
    stream.close()
    user, reply = store.messages(session.conversation_id)
    assert user.content == "abandon me"
    assert reply.stopped and reply.content == got


def test_100kb_paste_is_saved_then_refused_clearly_and_the_chat_goes_on(small_engine, store):
    session = Session(small_engine, store, options=OPTS)
    paste = ("lorem ipsum dolor sit amet " * 4000)[:100_000]
    with pytest.raises(ChatbotError, match="too long.*saved.*--ctx"):
        list(session.send(paste))
    (saved,) = store.messages(session.conversation_id)
    assert saved.content == paste.strip()  # nothing typed is lost
    items = send(session, "short question")
    notices = [i for i in items if isinstance(i, Notice)]
    assert notices and "left out of the prompt" in notices[0].text
    assert [m.content for m in store.messages(session.conversation_id)][:2] == [
        paste.strip(),
        "short question",
    ]


def test_conversation_longer_than_the_context_drops_oldest_from_prompt_only(small_engine, store):
    session = Session(small_engine, store, system_prompt="SYSTEM", options=OPTS)
    results, notices = [], []
    for i in range(14):
        items = send(session, f"message number {i} " + "pad " * 8)
        notices += [x for x in items if isinstance(x, Notice)]
        results.append(items[-1])
    saved = store.messages(session.conversation_id)
    assert len(saved) == 28  # nothing deleted
    assert notices, "the user is told when history is left out"
    assert all(r.stats.prompt_tokens + OPTS.max_tokens <= 256 for r in results)
    assert results[-1].history_left_out > 0
    # The cut moves in steps, so most turns still reuse the cached prefix.
    reused = [r.stats.cached_tokens > 0 for r in results[1:]]
    assert sum(reused) >= len(reused) // 2
    # The system prompt stays in every prompt.
    prompt = session._prompt(saved[session._cut :], {"role": "user", "content": "x"})
    assert prompt[0] == {"role": "system", "content": "SYSTEM"}


@pytest.fixture
def knowledge_base(tmp_path):
    faq = tmp_path / "faq.jsonl"
    entries = [
        {"id": "reset", "question": "How do I reset my password?",
         "answer": "Use the Forgot password link on the sign-in page."},
        {"id": "refund", "question": "How long does a refund take?",
         "answer": "Refunds reach your card within 5 business days."},
    ]  # fmt: skip
    faq.write_text("\n".join(json.dumps(e) for e in entries), encoding="utf-8")
    kb = KnowledgeBase.open(faq, index_dir=tmp_path / "index")
    yield kb
    kb.close()


def test_faq_handoff_answers_without_the_model(engine, store, knowledge_base):
    session = Session(engine, store, policy=FaqPolicy(knowledge_base), options=OPTS)
    items = send(session, "Can you recommend a quantum physics textbook?")
    result = items[-1]
    assert result.handoff and result.stats is None
    assert result.answer == knowledge_base.handoff_reply
    assert store.messages(session.conversation_id)[-1].handoff
    assert store.turns(session.conversation_id) == []
    assert store.handoffs()[0].question == "Can you recommend a quantum physics textbook?"


def test_asking_for_a_person_is_handed_off_without_the_model(engine, store, knowledge_base):
    session = Session(engine, store, policy=FaqPolicy(knowledge_base), options=OPTS)
    result = send(session, "I want to talk to a real person")[-1]
    assert result.handoff and result.stats is None and result.sources == ()
    assert result.answer == DEFAULT_REQUESTED_REPLY == knowledge_base.requested_reply
    assert store.handoffs()[0].question == "I want to talk to a real person"
    assert store.turns(session.conversation_id) == []


def test_small_talk_is_answered_without_the_model_or_a_handoff(engine, store, knowledge_base):
    session = Session(engine, store, policy=FaqPolicy(knowledge_base), options=OPTS)
    hello, thanks = send(session, "Hello!")[-1], send(session, "thanks a lot")[-1]
    assert (hello.answer, thanks.answer) == (GREETING_REPLY, THANKS_REPLY)
    assert not hello.handoff and hello.stats is None and hello.sources == ()
    assert store.handoffs() == [] and store.turns(session.conversation_id) == []
    assert [m.content for m in store.messages(session.conversation_id)] == [
        "Hello!",
        GREETING_REPLY,
        "thanks a lot",
        THANKS_REPLY,
    ]


def test_a_configured_handoff_reply_serves_requests_for_a_person(engine, store, tmp_path):
    faq = tmp_path / "faq.jsonl"
    faq.write_text(json.dumps({"id": "hours", "question": "When are you open?", "answer": "9-5."}))
    with KnowledgeBase.open(faq, index_dir=tmp_path / "i", handoff_reply="Call Sam.") as kb:
        session = Session(engine, store, policy=FaqPolicy(kb), options=OPTS)
        assert send(session, "agent")[-1].answer == "Call Sam."


def test_faq_grounding_goes_in_the_newest_message_and_keeps_the_cache(
    engine, store, knowledge_base
):
    session = Session(engine, store, policy=FaqPolicy(knowledge_base), options=OPTS)
    first = send(session, "How do I reset my password?")[-1]
    assert first.sources and first.sources[0] == "reset"
    user, reply = store.messages(session.conversation_id)
    assert user.content == "How do I reset my password?"  # plain text for people
    assert "Forgot password" in user.prompt_content  # what the model saw, kept for re-rendering
    assert reply.sources == first.sources
    second = send(session, "How long does a refund take?")[-1]
    assert second.stats.cached_tokens >= first.stats.prompt_tokens


def test_replies_written_without_the_model_stay_out_of_its_prompt(engine, store, knowledge_base):
    """Small talk, a hand-off or an ask-back between two answers is not in the model's prompt
    (the bot's canned lines primed its answers): the next answer's prompt is the same size as
    without them, and the cache still holds the first exchange."""
    plain = Session(engine, store, policy=FaqPolicy(knowledge_base), options=OPTS)
    with_talk = Session(engine, store, policy=FaqPolicy(knowledge_base), options=OPTS)
    for session, between in ((plain, []), (with_talk, ["thanks a lot", "Tell me a joke"])):
        first = send(session, "How do I reset my password?")[-1]
        for text in between:
            assert send(session, text)[-1].stats is None  # no model call
        last = send(session, "How long does a refund take?")[-1]
        assert last.stats.cached_tokens >= first.stats.prompt_tokens
    plain_last, talk_last = (store.turns(s.conversation_id)[-1] for s in (plain, with_talk))
    assert plain_last.prompt_tokens == talk_last.prompt_tokens
    assert len(store.messages(with_talk.conversation_id)) == 8, "the store keeps every line"


def test_faq_reply_facts_are_checked_against_the_article(engine, store, knowledge_base):
    """The tiny model writes noise: whatever numbers it makes up are found and saved."""
    session = Session(engine, store, policy=FaqPolicy(knowledge_base), options=OPTS)
    send(session, "My order 4471 from 9 days ago: how long does a refund take?")
    for _ in range(4):
        result = send(session, "How long does a refund take?")[-1]
        article = knowledge_base.entry("refund").answer
        said = [m.content for m in store.messages(session.conversation_id) if m.role == "user"]
        assert result.unsupported == tuple(unsupported_facts(result.answer, [article, *said]))
        assert store.messages(session.conversation_id)[-1].unsupported == result.unsupported


def test_export_markdown_and_json(engine, store):
    session = Session(engine, store, system_prompt="Be brief.", options=OPTS)
    result = send(session, "Export *me*")[-1]
    md = export_conversation(store, result.conversation_id, "md")
    assert md.startswith("# Export *me*") and "## You\n\nExport *me*" in md
    assert "> Be brief." in md and "## Assistant" in md
    doc = json.loads(export_conversation(store, result.conversation_id, "json"))
    assert doc["conversation"]["id"] == result.conversation_id
    assert [m["role"] for m in doc["messages"]] == ["user", "assistant"]
    assert doc["messages"][1]["content"] == result.answer
    with pytest.raises(ChatbotError, match="format"):
        export_conversation(store, result.conversation_id, "pdf")


def test_a_looping_reply_is_stopped_and_saved_without_the_repeat(engine, store):
    """The tiny random model loops at temperature 0: the session stops it early."""
    options = GenerationOptions(max_tokens=300, temperature=0.0)
    session = Session(engine, store, options=options)
    items = send(session, "Tell me a story")
    result = items[-1]
    streamed = "".join(i.text for i in items if isinstance(i, TextChunk))
    assert result.stats.stop_reason == "repetition" and not result.stopped
    assert result.stats.completion_tokens < 300
    guard = RepetitionGuard()
    guard.add(streamed)
    assert result.answer == guard.kept() and len(result.answer) < len(streamed)
    assert store.messages(session.conversation_id)[-1].content == result.answer
    assert store.turns(session.conversation_id)[-1].stop_reason == "repetition"


def test_export_notes_the_facts_a_reply_made_up(store):
    cid = store.new_conversation("Refunds").id
    store.add_message(cid, "user", "How long do refunds take?")
    store.add_message(
        cid, "assistant", "About 3 weeks.", sources=["refund"], unsupported=["3 weeks"]
    )
    md = export_conversation(store, cid, "md")
    assert "_(sources: refund; not in the cited article: 3 weeks)_" in md
    doc = json.loads(export_conversation(store, cid, "json"))
    assert doc["messages"][1]["unsupported"] == ["3 weeks"]


def test_a_follow_up_is_grounded_on_the_topic_before(engine, store, tmp_path):
    faq = Path(__file__).resolve().parents[2] / "data/faq/store_faq.jsonl"
    with KnowledgeBase.open(faq, index_dir=tmp_path / "index") as kb:
        assert kb.retrieve("What if it already shipped?").ids[0] != "order-cancel"  # alone
        session = Session(engine, store, policy=FaqPolicy(kb), options=OPTS)
        assert send(session, "Can I cancel my order?")[-1].sources == ("order-cancel",)
        assert send(session, "What if it already shipped?")[-1].sources == ("order-cancel",)
