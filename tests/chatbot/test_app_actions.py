"""Pilot tests of the app's message actions, settings, palette and live figures, on the tiny
GGUF (real llama.cpp, replies of random bytes: the mechanics are what is checked) and a real
SQLite store. Each test drives keys as a user would and checks the screen and the database."""

import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.command import CommandPalette
from textual.widgets import Select

from chatbot.cli.config import load_preferences
from chatbot.engines.base import GenerationOptions, TextChunk
from chatbot.engines.llama import LlamaEngine
from chatbot.store.records import ConversationSettings
from chatbot.store.store import Store
from chatbot.tui.app import ChatApp
from chatbot.tui.screens.export import ExportScreen
from chatbot.tui.screens.settings import SettingsScreen
from chatbot.tui.widgets.input_box import InputBox
from chatbot.tui.widgets.message_view import MessageBubble, MessageView
from chatbot.tui.widgets.status_line import StatusLine
from tests.chatbot.pilot import (
    bubbles,
    notifications,
    palette_hits,
    ready,
    seed_conversation,
    send,
    wait_for,
)
from tests.chatbot.tiny_gguf import build_tiny_chat_gguf

SIZE = (100, 32)
REPLY = "Two ways:\n\n```python\nprint('hi')\n```\n\nor\n\n```sh\necho hi\nls\n```\n"


@pytest.fixture
def models(tmp_path, monkeypatch, tiny_gguf) -> Path:
    """A model cache holding the tiny model and a second one (other weights)."""
    monkeypatch.setenv("CHATBOT_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "models"
    folder.mkdir(parents=True)
    shutil.copy(tiny_gguf, folder / "tiny-a.gguf")
    build_tiny_chat_gguf(folder / "tiny-b.gguf", seed=1)
    return folder


def load(path: Path) -> LlamaEngine:
    return LlamaEngine(path, n_ctx=2048, n_threads=1)


@pytest.fixture
def make_app(db_path, models) -> Iterator[Callable[..., ChatApp]]:
    stores: list[Store] = []

    def make(wrap=None, max_tokens: int = 12, temperature: float = 0.9) -> ChatApp:
        store = Store(db_path)
        stores.append(store)

        def start() -> LlamaEngine:
            engine = load(models / "tiny-a.gguf")
            return wrap(engine) if wrap else engine

        options = GenerationOptions(max_tokens=max_tokens, temperature=temperature)
        return ChatApp(start, store, options=options, load_model=load)

    yield make
    for store in stores:
        store.close()


def saved(db_path: Path, conversation_id: int) -> list[tuple[str, str, bool]]:
    """(role, content, replaced) of every message row, as SQLite holds them."""
    with sqlite3.connect(db_path) as db:
        rows = db.execute(
            "SELECT role, content, replaced_at IS NOT NULL FROM messages "
            "WHERE conversation_id = ? ORDER BY id",
            [conversation_id],
        ).fetchall()
    return [(role, content, bool(replaced)) for role, content, replaced in rows]


async def settle(pilot, app: ChatApp, turns: int | None = None) -> None:
    """Wait for the reply to end (with `turns`, for that many latency rows: a tiny model's
    reply can be over before a test looks)."""
    if turns is not None:
        logged = lambda: len(app.store.turns(app.conversation_id)) == turns  # noqa: E731
        await wait_for(pilot, logged, f"turn {turns}")
    await wait_for(pilot, lambda: not app.panel.replying, "the reply to end")
    await pilot.pause()


async def test_regenerate_keeps_both_replies_in_sqlite(make_app, db_path):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        first = (await send(pilot, "Hi there")).text
        await pilot.press("ctrl+r")
        await settle(pilot, app, turns=2)
        rows = saved(db_path, app.conversation_id)
        assert [(role, replaced) for role, _, replaced in rows] == [
            ("user", True),
            ("assistant", True),
            ("user", False),
            ("assistant", False),
        ]
        assert rows[1][1] == first, "the earlier reply is kept as it was"
        assert bubbles(app) == [("user", "Hi there"), ("assistant", rows[3][1])]
        assert len(app.store.turns(app.conversation_id)) == 2


async def test_edit_and_resend_replaces_the_last_message(make_app, db_path):
    app = make_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        await send(pilot, "Hi")
        await send(pilot, "Whats the tiem?")
        editor = app.query_one(InputBox)
        await pilot.press("f4")
        assert editor.text == "Whats the tiem?" and editor.has_class("editing")
        await pilot.press("escape")
        assert editor.text == "" and not app.panel.editing, "Esc leaves it as it was"
        await pilot.press("f4", "ctrl+u", *"What's the time?", "enter")
        await settle(pilot, app, turns=3)
        shown = [text for role, text in bubbles(app) if role == "user"]
        assert shown == ["Hi", "What's the time?"]
        rows = saved(db_path, app.conversation_id)
        assert ("user", "Whats the tiem?", True) in rows
        kept = [(role, content) for role, content, replaced in rows if not replaced]
        assert [role for role, _ in kept] == ["user", "assistant", "user", "assistant"]
        assert kept[2] == ("user", "What's the time?")


async def test_up_arrow_recalls_earlier_messages(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "first question")
        await pilot.press("ctrl+n")
        await send(pilot, "second question")
        editor = app.query_one(InputBox)
        await pilot.press("up")
        assert editor.text == "second question"
        await pilot.press("up")
        assert editor.text == "first question"
        await pilot.press("up")
        assert editor.text == "first question", "the oldest stays"
        await pilot.press("down")
        assert editor.text == "second question"
        await pilot.press("down")
        assert editor.text == ""
        await pilot.press(*"typed", "up")
        assert editor.text == "typed", "up recalls only from an empty editor"


async def test_copy_a_message_and_the_next_code_block(make_app, db_path):
    seed_conversation(db_path, "Code", [("How do I greet?", REPLY)])
    app = make_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await pilot.press("f5")
        assert app.clipboard == REPLY, "the Markdown source, as saved"
        assert any("Copied the reply" in n for n in notifications(app))
        await pilot.press("f6")
        assert app.clipboard == "echo hi\nls", "the newest code block first"
        assert any("code block 1 of 2 (sh, 2 lines)" in n for n in notifications(app))
        await pilot.press("f6")
        assert app.clipboard == "print('hi')"
        app.query_one(MessageView).focus()
        await pilot.press("up", "up", "y")
        assert app.clipboard == "How do I greet?", "the selected message"
        assert app.query(MessageBubble).first().has_class("-selected")
        await pilot.press("c")
        assert any("No code block" in n for n in notifications(app))
        await ready(pilot)


async def test_settings_are_saved_per_conversation_and_used_by_the_next_turn(make_app):
    app = make_app(max_tokens=12)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "Hi")
        first = app.conversation_id
        await pilot.press("f3")
        assert isinstance(app.screen, SettingsScreen)
        screen = app.screen
        screen.query_one("#model", Select).value = "tiny-b.gguf"
        screen.query_one("#system").text = "Answer in one word."
        screen.query_one("#temperature").value = "0"
        screen.query_one("#max-tokens").value = "3"
        await pilot.click("#ok")
        await wait_for(pilot, lambda: app.engine and app.engine.info.model == "tiny-b.gguf", "b")
        chosen = app.store.settings(first)
        assert chosen == ConversationSettings("Answer in one word.", "tiny-b.gguf", 0.0, 3, None)
        await send(pilot, "Hi")
        turn = app.store.turns(first)[-1]
        assert turn.model_file == "tiny-b.gguf" and turn.completion_tokens <= 3
        assert app.panel.session.system_prompt == "Answer in one word."
        assert "tiny-b" in app.query_one(StatusLine).line
        await pilot.press("ctrl+n")  # a new conversation: the app's model and settings
        await wait_for(pilot, lambda: app.engine and app.engine.info.model == "tiny-a.gguf", "a")
        await send(pilot, "Hi")
        assert app.store.turns(app.conversation_id)[-1].model_file == "tiny-a.gguf"
        assert app.store.settings(app.conversation_id) == ConversationSettings()
        await app.open_conversation(first)  # back: its own model again
        await wait_for(pilot, lambda: app.engine and app.engine.info.model == "tiny-b.gguf", "b")


async def test_settings_for_a_new_conversation_go_with_its_first_message(make_app):
    app = make_app(max_tokens=12)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f3")
        field = app.screen.query_one("#max-tokens")
        field.focus()
        await pilot.press("2", "enter")  # Enter in a field saves
        assert not isinstance(app.screen, SettingsScreen)
        await pilot.press("f3")
        app.screen.query_one("#temperature").value = "9"
        await pilot.click("#ok")
        assert isinstance(app.screen, SettingsScreen), "out of range: the dialog stays"
        await pilot.press("escape")
        await send(pilot, "Hi")
        assert app.store.settings(app.conversation_id).max_tokens == 2
        assert app.store.turns(app.conversation_id)[-1].completion_tokens <= 2


async def test_palette_finds_the_apps_commands_by_their_f1_names(make_app, db_path):
    seed_conversation(db_path, "Old", [("q", "a")])
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+p", *"export")
        await wait_for(pilot, lambda: bool(palette_hits(app)), "the palette's hits")
        assert palette_hits(app)[0] == "Export the conversation"
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ExportScreen), "the export dialog")
        await pilot.press("escape")
        await pilot.press("ctrl+p", *"new conv")
        await wait_for(pilot, lambda: bool(palette_hits(app)), "the palette's hits")
        assert "New conversation" in palette_hits(app)
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, CommandPalette), "the palette")
        await wait_for(pilot, lambda: app.conversation_id is None, "a new conversation")
        assert bubbles(app) == []


class PacedEngine:
    """The real tiny engine, passing on one reply piece per permit the test gives, so the
    test can look at the app mid-reply."""

    def __init__(self, engine: LlamaEngine) -> None:
        self.engine = engine
        self.info = engine.info
        self.permits = threading.Semaphore(0)

    def stream(self, messages, options, should_stop=lambda: False):
        for item in self.engine.stream(messages, options, should_stop):
            while isinstance(item, TextChunk) and not self.permits.acquire(timeout=0.05):
                if should_stop():
                    break
            yield item

    def count_tokens(self, messages) -> int:
        return self.engine.count_tokens(messages)

    def close(self) -> None:
        self.permits.release(10_000)
        self.engine.close()


async def test_live_figures_change_while_a_reply_streams(make_app):
    paced: list[PacedEngine] = []
    app = make_app(wrap=lambda e: paced.append(PacedEngine(e)) or paced[-1], max_tokens=40)
    app.panel.options = GenerationOptions(max_tokens=40, temperature=0.0)  # a 40-token reply
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        status = app.query_one(StatusLine)
        await pilot.press(*"Hi", "enter")
        await wait_for(pilot, lambda: "Writing… 0 tok" in status.line, "the live figures")
        paced[0].permits.release(1)
        await wait_for(pilot, lambda: "Writing… 1 tok" in status.line, "one token")
        one = status.line
        await pilot.pause(0.3)
        paced[0].permits.release(5)
        await wait_for(pilot, lambda: "Writing… 6 tok" in status.line, "six tokens")
        six = status.line
        assert one != six and "tok/s" in six and " s" in six
        assert float(one.split("·")[2].split()[0]) < float(six.split("·")[2].split()[0])
        assert "TTFT" not in six, "not the last reply's figures"
        paced[0].permits.release(1000)
        await settle(pilot, app)
        assert "Writing" not in status.line and "TTFT" in status.line


async def test_search_says_when_nothing_matches_and_enter_opens_the_first(make_app, db_path):
    wanted = seed_conversation(db_path, "Boats", [("How do sails work?", "Wind.")])
    seed_conversation(db_path, "Cakes", [("Oven?", "180 degrees.")])
    app = make_app()
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await pilot.press("ctrl+f", *"zebra")
        await pilot.pause()
        hint = app.query_one("#no-match")
        assert hint.display and "No conversation matches “zebra”." in str(hint.render())
        await pilot.press("enter")
        assert any("No conversation matches" in n for n in notifications(app))
        await pilot.press(*["backspace"] * 5, *"sails")
        await pilot.pause()
        assert not hint.display
        await pilot.press("enter")
        await pilot.pause()
        assert app.conversation_id == wanted and app.query_one(InputBox).has_focus
        await ready(pilot)


async def test_line_breaks_are_kept_on_screen(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.query_one(InputBox).focus()
        await pilot.press(*"one", "ctrl+j", *"two", "ctrl+j", *"three", "enter")
        await wait_for(pilot, lambda: len(app.query(MessageBubble)) == 2, "the message")
        mine = app.query(MessageBubble).first()
        assert mine.text == "one\ntwo\nthree"
        paragraph = mine.markdown.query_one("MarkdownParagraph")
        assert paragraph.region.height == 3, "three lines, not one"
        await settle(pilot, app)


async def test_theme_and_list_choice_are_kept_in_the_config_file(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        app.theme = "nord"
        await pilot.press("ctrl+b")
        assert not app.query_one("#sidebar").display
        await ready(pilot)
    assert (load_preferences().theme, load_preferences().conversation_list) == ("nord", False)
    again = make_app()
    async with again.run_test(size=SIZE) as pilot:
        assert again.theme == "nord" and not again.query_one("#sidebar").display
        await pilot.press("ctrl+b")
        assert again.query_one("#sidebar").display
        await ready(pilot)
    assert load_preferences().conversation_list is True


async def test_faq_mode_shows_in_the_status_line_and_settings_can_turn_it_off(
    db_path, models, tmp_path
):
    import json

    from chatbot.faq.knowledge_base import KnowledgeBase

    faq = tmp_path / "library.jsonl"
    entry = {"id": "hours", "question": "When is the library open?", "answer": "9 to 19."}
    faq.write_text(json.dumps(entry) + "\n")
    store = Store(db_path)
    kb = KnowledgeBase.open(faq, index_dir=tmp_path / "index", semantic=False)
    app = ChatApp(lambda: load(models / "tiny-a.gguf"), store, knowledge_base=kb)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            status = app.query_one(StatusLine)
            assert status.line.startswith("Ready │ FAQ │ tiny-a")
            await send(pilot, "Can you repair my bicycle tyre?")
            cid = app.conversation_id
            assert app.store.turns(cid) == [], "the FAQ bot answered without the model"
            await pilot.press("f3")
            assert str(faq) in " ".join(str(label.render()) for label in app.screen.query("Label"))
            await pilot.click("#faq")
            await pilot.click("#ok")
            await pilot.pause()
            assert status.line.startswith("Ready │ chat │") and not app.panel.faq_mode
            assert app.store.settings(cid).mode == "chat"
            await send(pilot, "Can you repair my bicycle tyre?")
            assert len(app.store.turns(cid)) == 1, "plain chat asks the model"
    finally:
        kb.close()
        store.close()
