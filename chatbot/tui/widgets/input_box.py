"""The message editor: a multi-line TextArea where Enter sends instead of breaking the line."""

from dataclasses import dataclass

from textual import events
from textual.message import Message
from textual.widgets import TextArea

# Keys that insert a line break. Most terminals send Shift+Enter as plain Enter; Ctrl+J (a raw
# line feed) works everywhere, Alt+Enter in most terminals.
NEWLINE_KEYS = ("shift+enter", "ctrl+j", "alt+enter")


class InputBox(TextArea):
    """Enter posts `InputBox.Submitted`; Shift+Enter, Ctrl+J or Alt+Enter insert a newline."""

    @dataclass
    class Submitted(Message):
        """The user pressed Enter; the box keeps its text until the app takes it."""

        input_box: "InputBox"
        text: str

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 (Textual's name)
        super().__init__(id=id, soft_wrap=True, show_line_numbers=False, tab_behavior="focus")
        self.placeholder = "Type a message · Enter sends · Shift+Enter or Ctrl+J: new line"

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.post_message(self.Submitted(self, self.text))
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            start, end = self.selection
            self.replace("\n", start, end, maintain_selection_offset=False)
            return
        await super()._on_key(event)

    def take_text(self) -> str:
        """Empty the box and return what was in it (the app puts it back if sending fails)."""
        text = self.text
        self.clear()
        return text
