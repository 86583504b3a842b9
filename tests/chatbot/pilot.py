"""Driving the chat app under Textual's pilot: wait for the model, send, read the screen."""

from collections.abc import Callable
from pathlib import Path

from textual.css.query import NoMatches

from chatbot.store.store import Store
from chatbot.tui.app import ChatApp
from chatbot.tui.widgets.conversation_list import ConversationItem
from chatbot.tui.widgets.input_box import InputBox
from chatbot.tui.widgets.message_view import MessageBubble

TIMEOUT_S = 120.0


async def wait_for(pilot, condition: Callable[[], bool], what: str) -> None:
    """Let the app run until the condition holds (the model is slow on a busy machine)."""
    for _ in range(int(TIMEOUT_S / 0.02)):
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def ready(pilot) -> ChatApp:
    app = pilot.app
    await wait_for(pilot, lambda: app.engine is not None or app.panel.engine_error, "the model")
    assert app.engine is not None, app.panel.engine_error
    return app


async def send(pilot, text: str) -> MessageBubble:
    """Type the text, press Enter, wait for the whole reply; return the reply's bubble."""
    app = pilot.app
    app.query_one(InputBox).focus()
    shown = len(app.query(MessageBubble))
    await pilot.press(*text)
    await pilot.press("enter")

    def finished() -> bool:
        replies = app.query(MessageBubble)
        return len(replies) == shown + 2 and not replies.last().has_class("streaming")

    await wait_for(pilot, finished, "the reply")
    await pilot.pause()
    return app.query(MessageBubble).last()


def bubbles(app: ChatApp) -> list[tuple[str, str]]:
    return [(bubble.role, bubble.text) for bubble in app.query(MessageBubble)]


def settled_bubbles(app: ChatApp) -> list[tuple[str, str]] | None:
    """`bubbles`, or None while a bubble is half mounted or half removed (no body yet)."""
    try:
        return bubbles(app)
    except NoMatches:
        return None


def listed_titles(app: ChatApp) -> list[str]:
    return [str(item.query_one("Label").render()) for item in app.query(ConversationItem)]


def reply_numbers(status: str) -> list[str]:
    """The status line's parts about the last reply: time to first token, speed, context."""
    numbers = [part for part in status.split(" │ ") if part.startswith(("TTFT", "ctx"))]
    assert len(numbers) == 2 and "ms" in numbers[0], status
    return numbers


def notifications(app: ChatApp) -> list[str]:
    return [n.message for n in app._notifications]  # noqa: SLF001 (Textual has no public getter)


def seed_conversation(db_path: Path, title: str, turns: list[tuple[str, str]]) -> int:
    """Write a conversation straight into the store, as an earlier run of the app would have."""
    with_store = Store(db_path)
    try:
        conversation = with_store.new_conversation(title)
        for question, answer in turns:
            with_store.add_message(conversation.id, "user", question)
            with_store.add_message(conversation.id, "assistant", answer)
        return conversation.id
    finally:
        with_store.close()


def on_screen(app: ChatApp, widget) -> bool:
    """The widget is shown whole inside the screen: laid out, not hidden, not cut off."""
    region, screen = widget.region, app.screen.region
    return region.area > 0 and screen.contains_region(region)


def palette_hits(app: ChatApp) -> list[str]:
    """The command palette's entries' names, as shown (the palette must be open)."""
    from textual.command import CommandList

    found = app.screen.query_one(CommandList)
    prompts = [str(found.get_option_at_index(i).prompt) for i in range(found.option_count)]
    return [prompt.splitlines()[0] for prompt in prompts]  # the help line goes
