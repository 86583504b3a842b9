"""The app in FAQ mode, under Textual's pilot, on the real SmolLM2 and the store FAQ: the mode
shows, a new conversation is opened rather than the last general chat, and an ask-back's choices
are picked with the key 2 and with the mouse."""

from pathlib import Path

import pytest
from textual import events

from chatbot.engines.base import GenerationOptions
from chatbot.engines.llama import LlamaEngine
from chatbot.faq.knowledge_base import KnowledgeBase
from chatbot.store.store import Store
from chatbot.tui.app import ChatApp
from chatbot.tui.widgets.choices import ChoiceItem, ChoiceList
from chatbot.tui.widgets.input_box import InputBox
from chatbot.tui.widgets.message_view import MessageBubble
from chatbot.tui.widgets.status_line import StatusLine
from tests.chatbot.pilot import on_screen, ready, seed_conversation, send, wait_for

pytestmark = pytest.mark.slow

STORE_FAQ = Path(__file__).resolve().parents[2] / "data/faq/store_faq.jsonl"
SIZE = (120, 40)
ASKS_BACK = "help with my order"  # the middle band: three order entries score alike


@pytest.fixture(scope="module")
def store_kb(tmp_path_factory):
    with KnowledgeBase.open(STORE_FAQ, index_dir=tmp_path_factory.mktemp("index")) as kb:
        yield kb


@pytest.fixture
def app(smollm2_gguf, db_path, store_kb):
    store = Store(db_path)
    model = smollm2_gguf("Q4_K_M")
    yield ChatApp(
        lambda: LlamaEngine(model, n_ctx=2048, n_threads=2),
        store,
        knowledge_base=store_kb,
        options=GenerationOptions(max_tokens=60, temperature=0.0),
    )
    store.close()


async def pick(pilot, how) -> MessageBubble:
    """Pick a choice (`how` presses or clicks), wait for the answer; return its bubble."""
    app = pilot.app
    shown = len(app.query(MessageBubble))
    await how()

    def answered() -> bool:
        replies = app.query(MessageBubble)
        return len(replies) == shown + 2 and not replies.last().has_class("streaming")

    await wait_for(pilot, answered, "the picked entry's answer")
    await pilot.pause()
    return app.query(MessageBubble).last()


async def test_faq_mode_shows_and_starts_a_new_conversation(app, db_path):
    seed_conversation(db_path, "A general chat", [("Tell me a joke", "Why did the ...")])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.conversation_id is None and not app.query(MessageBubble)
        assert "FAQ" in app.query_one(StatusLine).line


async def test_an_ask_back_choice_is_picked_with_2_and_with_the_mouse(app):
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        asked = await send(pilot, ASKS_BACK)
        assert "Did you mean" in asked.text
        await wait_for(pilot, lambda: bool(app.query(ChoiceList)), "the choices")
        choices = app.query_one(ChoiceList)
        assert app.focused is choices and len(choices.choices) == 3
        second = choices.choices[1]
        answer = await pick(pilot, lambda: pilot.press("2"))
        assert not app.query(ChoiceList)  # the choices go with their turn
        assert isinstance(app.focused, InputBox), "typing goes on in the editor"
        saved = app.store.messages(app.conversation_id)
        assert saved[-2].content == "2" and saved[-1].sources == (second.id,)
        assert f"[{second.id}]" in str(answer.query_one(".footer").render())
        assert (saved[1].outcome, saved[1].choice) == ("picked", second.id)

        await send(pilot, ASKS_BACK)
        await wait_for(pilot, lambda: bool(app.query(ChoiceList)), "the choices again")
        first = app.query_one(ChoiceList).choices[0]
        items = list(app.query(ChoiceItem))
        await wait_for(pilot, lambda: on_screen(app, items[0]), "the choices in view")
        await pick(pilot, lambda: pilot.click(items[0]))
        assert app.store.messages(app.conversation_id)[-1].sources == (first.id,)


async def test_typing_over_the_choices_goes_to_the_editor(app):
    """A customer who ignores the choices and types a new question: no key of it picks
    ("n" of "and" once meant "none of these" and handed off)."""
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, ASKS_BACK)
        await wait_for(pilot, lambda: bool(app.query(ChoiceList)), "the choices")
        assert isinstance(app.focused, ChoiceList)
        await pilot.press(*"and can I cancel it?")
        editor = app.query_one(InputBox)
        assert editor.text == "and can I cancel it?" and editor.has_focus
        saved = app.store.messages(app.conversation_id)
        assert [m.role for m in saved] == ["user", "assistant"], "nothing was sent"
        assert app.query(ChoiceList), "the choices stay open until a message is sent"


async def test_a_message_typed_fast_over_the_choices_is_sent_whole(app):
    """A paste or a fast typist: the keys arrive before the editor has the focus. Its "2"
    is text, not a pick, and its Enter sends it (it was lost: the message sat in the editor)."""
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, ASKS_BACK)
        await wait_for(pilot, lambda: bool(app.query(ChoiceList)), "the choices")
        typed = "can I return 2 items?"
        for key in [*typed, "enter"]:  # all at once, as a terminal delivers a burst
            character = "\r" if key == "enter" else key
            name = {" ": "space", "?": "question_mark"}.get(key, key)
            app.post_message(events.Key(name, character))

        def sent() -> bool:
            return len(app.store.messages(app.conversation_id)) == 4

        await wait_for(pilot, sent, "the typed message and its reply")
        saved = app.store.messages(app.conversation_id)
        assert saved[2].content == typed and saved[1].outcome != "picked"
        assert app.query_one(InputBox).text == ""
