"""An ask-back's choices under the bot's "Did you mean ...?": pick one with 1-3 or the mouse.

The FAQ bot asks back instead of guessing (chatbot.faq.policy); in the app its choices are
items to select rather than text to retype. Picking one posts `ChoiceList.Picked` with what to
send as the customer's message ("2", or "no" for none of them), which the chat panel sends like
typed text, so the store and the bot see exactly what `chatbot ask` would. The list goes once a
new turn starts. `open_choices` finds the choices still open when a saved conversation is shown.
A customer who ignores the choices and types goes on typing: any other printable key goes to
the editor (`TypedOn`), so "and ..." never reads as a key that picks, and so does the rest of
that burst of keys, digits and Enter included (a paste arrives before the editor has the focus).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual import events
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.widgets import Static

from chatbot.conversation.policy import Choice
from chatbot.store.records import Message as StoredMessage

if TYPE_CHECKING:
    from chatbot.faq.knowledge_base import KnowledgeBase
    from chatbot.store.store import Store

NONE_OF_THEM = "None of these: pass me to a person"
HINT = "Press 1-{n} or click to choose · 0: none of these · or type a new message"


class ChoiceItem(Static):
    """One choice; a click picks it."""

    def __init__(self, number: int, text: str, send: str) -> None:
        super().__init__(Content(f"{number}. {text}" if number else text), classes="choice")
        self.send = send

    def on_click(self, event: events.Click) -> None:
        event.stop()
        self.post_message(ChoiceList.Picked(self.send))


class ChoiceList(Vertical, can_focus=True):
    """The choices of one ask-back, then "none of these"; focused when shown."""

    DEFAULT_CSS = """
    ChoiceList { height: auto; margin: 0 2 1 2; padding: 0 1; border: round $accent; }
    ChoiceList:focus { border: round $accent-lighten-2; }
    ChoiceList .choice { height: auto; padding: 0 1; }
    ChoiceList .choice:hover { background: $accent 30%; }
    ChoiceList .choice-hint { color: $text-muted; height: auto; }
    """
    BINDINGS = [
        *(Binding(str(n), f"pick({n})", f"Choice {n}", show=False) for n in range(1, 10)),
        Binding("0", "none", "None of these", show=False),
    ]

    @dataclass
    class Picked(Message):
        """What to send as the customer's message: a choice's number, or "no"."""

        text: str

    @dataclass
    class TypedOn(Message):
        """A key of a message typed over the choices, for the editor; `send`: it was Enter."""

        text: str
        send: bool = False

    def __init__(self, choices: Sequence[Choice]) -> None:
        super().__init__(classes="choices")
        self.choices = tuple(choices)
        self.border_title = "Did you mean"
        self._typing = False  # a message has started: the keys still arriving are its own

    def compose(self):
        for number, choice in enumerate(self.choices, start=1):
            yield ChoiceItem(number, choice.question, str(number))
        yield ChoiceItem(0, NONE_OF_THEM, "no")
        yield Static(Content(HINT.format(n=len(self.choices))), classes="choice-hint")

    def on_mount(self) -> None:
        self.call_after_refresh(self._show)

    def on_resize(self) -> None:
        self._show()  # laid out (or taller): still the last thing in view

    def _show(self) -> None:
        """Under the reply, in view: the conversation scrolled to its end."""
        if self.parent is not None and self.is_mounted:
            self.parent.scroll_end(animate=False)

    def on_focus(self) -> None:
        self._typing = False  # focused again (a click): 1-3 pick again

    def on_key(self, event: events.Key) -> None:
        """A printable key that picks nothing starts a message; until the editor has the
        focus, every printable key and Enter of it goes there too, in order."""
        text = event.character if event.is_printable and event.character else None
        self._typing = self._typing or (text is not None and not text.isdigit())
        if not self._typing or (text is None and event.key != "enter"):
            return
        event.stop()
        event.prevent_default()
        self.post_message(self.TypedOn(text or "", send=text is None))

    def action_pick(self, number: int) -> None:
        if 1 <= number <= len(self.choices):
            self.post_message(self.Picked(str(number)))

    def action_none(self) -> None:
        self.post_message(self.Picked("no"))


def open_choices(
    messages: Sequence[StoredMessage], knowledge_base: "KnowledgeBase | None"
) -> tuple[Choice, ...]:
    """The choices a saved conversation's last reply offers, still to be answered."""
    if not messages or knowledge_base is None or messages[-1].role != "assistant":
        return ()
    entries = [knowledge_base.entry(faq_id) for faq_id in messages[-1].choices]
    return tuple(Choice(e.id, e.question) for e in entries if e is not None)


def is_faq_conversation(messages: Sequence[StoredMessage], mode: str | None) -> bool:
    """A conversation the FAQ bot has answered in (or set to FAQ mode): one the app reopens
    in FAQ mode; a general chat is not, and a new conversation is opened instead."""
    if mode is not None:
        return mode == "faq"
    return any(m.band is not None or m.sources for m in messages if m.role == "assistant")


def conversation_to_open(store: "Store", conversation_ids: Sequence[int], faq: bool) -> int | None:
    """The conversation the app opens on start: the latest one, unless the app runs the FAQ
    bot and that one is a general chat (then None: a new conversation)."""
    if not conversation_ids:
        return None
    latest = conversation_ids[0]
    if not faq:
        return latest
    mode = store.settings(latest).mode
    return latest if is_faq_conversation(store.messages(latest), mode) else None
