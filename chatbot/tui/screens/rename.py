"""One-line text dialogs: rename a conversation, answer a hand-off as a person. Each returns
the text, or None when cancelled."""

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label


class TextDialog(ModalScreen[str | None]):
    """Enter or OK dismisses with the text; Esc or Cancel with None; empty text is refused."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self, title: str, value: str = "", *, ok: str, empty: str, note: str = "", hint: str = ""
    ) -> None:
        super().__init__()
        self._title, self._value, self._ok_label = title, value, ok
        self._empty, self._note, self._hint = empty, note, hint

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="title")
            if self._note:
                yield Label(self._note, id="note", markup=False)
            yield Input(self._value, placeholder=self._hint, id="text", select_on_focus=True)
            with Horizontal(classes="buttons"):
                yield Button(self._ok_label, variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        text = self.query_one("#text", Input).value.strip()
        if not text:
            self.notify(self._empty, severity="warning", markup=False)
            return
        self.dismiss(text)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class RenameScreen(TextDialog):
    def __init__(self, title: str) -> None:
        super().__init__("Rename conversation", title, ok="Rename", empty="a title cannot be empty")


class PersonReplyScreen(TextDialog):
    """The support team's answer to a hand-off, saved where the customer reads it
    (`Store.resolve_handoff`)."""

    def __init__(self, question: str) -> None:
        super().__init__(
            "Answer the customer as the support team",
            ok="Send",
            empty="the reply is empty",
            note=f"They asked: {question}",
            hint="Your reply",
        )
