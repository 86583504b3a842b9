"""The app on small terminals (60x20, 80x24): what must stay on screen, checked with the
widgets' regions; the status line's fitting; the README's key list against the bindings."""

from pathlib import Path

import pytest
from textual.widgets import Button
from textual.widgets._footer import FooterKey

from chatbot.engines.base import EngineInfo, GenerationStats
from chatbot.engines.llama import LlamaEngine
from chatbot.store.store import Store
from chatbot.tui.app import ChatApp
from chatbot.tui.commands import APP_COMMANDS, keys_markdown, with_keys_markdown
from chatbot.tui.screens.confirm import ConfirmScreen
from chatbot.tui.screens.export import ExportScreen
from chatbot.tui.screens.help import HelpScreen
from chatbot.tui.screens.rename import RenameScreen
from chatbot.tui.screens.settings import SettingsScreen
from chatbot.tui.widgets.conversation_list import ConversationList
from chatbot.tui.widgets.input_box import InputBox
from chatbot.tui.widgets.message_view import MessageBubble, MessageView
from chatbot.tui.widgets.status_line import Part, StatusLine, fit, model_parts, reply_parts
from tests.chatbot.pilot import on_screen, ready, seed_conversation

README = Path(__file__).resolve().parents[2] / "README.md"
# The footer's keys that must show at every size (F1 lists the rest).
ESSENTIAL = ("f1", "ctrl+n", "ctrl+r", "ctrl+s", "f8", "ctrl+b", "ctrl+q")
DIALOGS = (
    ("f1", HelpScreen),
    ("f2", RenameScreen),
    ("f3", SettingsScreen),
    ("ctrl+s", ExportScreen),
    ("f8", ConfirmScreen),
)
LONG = "A long answer that wraps over several lines of the conversation view. " * 4


@pytest.fixture
def make_app(tiny_gguf, db_path):
    seed_conversation(db_path, "Earlier", [("First?", LONG), ("Second?", LONG + "The end.")])
    stores: list[Store] = []

    def make() -> ChatApp:
        stores.append(Store(db_path))
        return ChatApp(lambda: LlamaEngine(tiny_gguf, n_ctx=1024, n_threads=1), stores[-1])

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def app(make_app) -> ChatApp:
    return make_app()


def footer_keys(app: ChatApp) -> dict[str, FooterKey]:
    return {key.key: key for key in app.screen.query(FooterKey)}


@pytest.mark.parametrize("size", [(60, 20), (80, 24)])
async def test_editor_last_message_and_essential_keys_are_visible(app, size):
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        await pilot.pause()
        assert on_screen(app, app.query_one(InputBox))
        view = app.query_one(MessageView)
        last = app.query(MessageBubble).last()
        assert "The end." in last.text
        assert view.region.contains_region(last.region.intersection(view.region))
        assert last.region.bottom <= view.region.bottom and last.region.bottom > view.region.y
        keys = footer_keys(app)
        for key in ESSENTIAL:
            assert key in keys and on_screen(app, keys[key]), f"{key} is cut off at {size}"
        line = app.query_one(StatusLine).line
        assert len(line) <= size[0] - 2, line
        assert line.startswith("Ready │ chat │ tiny-chat") or line.startswith("Ready │ chat │ ")
        await pilot.press("f4")  # editing: Esc (leave the edit) shows in the footer too
        assert on_screen(app, footer_keys(app)["escape"])
        await pilot.press("escape")


@pytest.mark.parametrize("size", [(60, 20), (80, 24)])
async def test_no_dialog_is_larger_than_the_screen(app, size):
    async with app.run_test(size=size) as pilot:
        await ready(pilot)
        for key, screen_type in DIALOGS:
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, screen_type)
            dialog = app.screen.query_one(".dialog")
            assert on_screen(app, dialog), f"{screen_type.__name__} at {size}: {dialog.region}"
            if screen_type is not SettingsScreen:  # that one scrolls to its buttons
                for button in app.screen.query(Button):
                    assert on_screen(app, button), f"{button.label} at {size}"
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(app.screen, screen_type)


async def test_the_list_hides_on_a_narrow_screen_and_ctrl_b_shows_it(make_app):
    app = make_app()
    async with app.run_test(size=(60, 20)) as pilot:
        await ready(pilot)
        sidebar = app.query_one(ConversationList)
        assert not sidebar.display and app.query_one(MessageView).region.width == 60
        await pilot.press("ctrl+b")
        await pilot.pause()
        assert sidebar.display and on_screen(app, sidebar) and sidebar.region.width <= 26
        assert app.query_one(MessageView).region.width >= 34, "replies keep room to read"
        await pilot.press("enter")  # opens the highlighted conversation, the list goes
        await pilot.pause()
        assert not sidebar.display and app.query_one(InputBox).has_focus
    wide = make_app()
    async with wide.run_test(size=(120, 40)) as pilot:
        assert wide.query_one(ConversationList).region.width == 32
        await ready(pilot)


def test_the_status_line_drops_its_least_useful_parts_first():
    info = EngineInfo(
        model="SmolLM2-135M-Instruct-Q4_K_M.gguf",
        quantization="Q4_K_M",
        n_ctx=4096,
        threads=2,
        backend="llama.cpp (CPU)",
        settings={"n_gpu_layers": 0, "flash_attn": False},
    )
    stats = GenerationStats(30, 0, 20, 84.0, 41.5, 600.0, "stop")
    model, *where = model_parts(info)
    parts = [Part("Ready", 100), Part("FAQ", 90), model, *reply_parts(stats, 4096), *where]
    wide = fit(parts, 200)
    assert wide == (
        "Ready │ FAQ │ SmolLM2-135M-Instruct-Q4_K_M │ TTFT 84 ms · 41.5 tok/s │ "
        "ctx 50/4096 (1%) │ llama.cpp (CPU) · 2 threads │ n_gpu_layers=0 flash_attn=False"
    )
    at_80 = fit(parts, 78)
    assert len(at_80) <= 78 and "flash_attn" not in at_80 and "TTFT 84 ms" in at_80
    assert fit(parts, 58) == "Ready │ FAQ │ SmolLM2-135M-Instruct-Q4_K_M"
    assert fit(parts, 10) == "Ready", "the state stays, cut by the widget if need be"


def test_readme_lists_every_key_and_command():
    readme = README.read_text(encoding="utf-8")
    assert keys_markdown() in readme, (
        "README's key list differs from chatbot.tui.commands; run "
        "`python -m chatbot.tui.commands README.md`"
    )
    assert with_keys_markdown(readme) == readme
    for command in APP_COMMANDS:
        assert f"| `{command.key}` | {command.name} |" in readme
