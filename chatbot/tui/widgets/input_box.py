"""The message editor: a multi-line TextArea where Enter sends instead of breaking the line,
and the up arrow in an empty editor recalls earlier messages (a shell's history)."""

from collections.abc import Callable
from dataclasses import dataclass

from textual import events
from textual.message import Message
from textual.widgets import TextArea

# Keys that insert a line break. Most terminals send Shift+Enter as plain Enter; Ctrl+J (a raw
# line feed) works everywhere, Alt+Enter in most terminals.
NEWLINE_KEYS = ("shift+enter", "ctrl+j", "alt+enter")


class InputBox(TextArea):
    """Enter posts `InputBox.Submitted`; Shift+Enter, Ctrl+J or Alt+Enter insert a newline.

    Up in an empty editor shows the newest of `sent_messages` (what the user sent, newest
    first), up again the one before; down goes back towards the newest, then to empty. Once
    the recalled text is edited, up and down move the cursor again.
    """

    @dataclass
    class Submitted(Message):
        """The user pressed Enter; the box keeps its text until the app takes it."""

        input_box: "InputBox"
        text: str

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 (Textual's name)
        super().__init__(id=id, soft_wrap=True, show_line_numbers=False, tab_behavior="focus")
        self.placeholder = "Type a message · Enter sends · Shift+Enter or Ctrl+J: new line"
        self.sent_messages: Callable[[], list[str]] = list  # newest first
        self._recalled: list[str] = []  # the history while recalling, else empty
        self._position = -1  # index in _recalled of the text shown

    def _recall(self, key: str) -> bool:
        """Show the earlier (up) or later (down) message of the history; False: not recalling."""
        recalling = bool(self._recalled) and self.text == self._recalled[self._position]
        if key == "up" and not recalling and not self.text:
            self._recalled, self._position = self.sent_messages(), -1
            recalling = bool(self._recalled)
        if not recalling:
            self._recalled = []
            return False
        step = 1 if key == "up" else -1
        self._position = min(self._position + step, len(self._recalled) - 1)
        self.text = self._recalled[self._position] if self._position >= 0 else ""
        if self._position < 0:
            self._recalled = []  # back to an empty editor
        self.move_cursor(self.document.end)
        return True

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.post_message(self.Submitted(self, self.text))
            return
        if event.key in ("up", "down") and self._recall(event.key):
            event.stop()
            event.prevent_default()
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
