"""A person's answer to a hand-off: returns the reply, or None when cancelled.

The support team reads a handed-off conversation in the app and answers it here; the reply is
saved in that conversation (`Store.resolve_handoff`), where the customer reads it.
"""

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label


class PersonReplyScreen(ModalScreen[str | None]):
    """Enter or Send dismisses with the reply; Esc or Cancel with None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self._question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Answer the customer as the support team", classes="title")
            yield Label(f"They asked: {self._question}", id="question", markup=False)
            yield Input(placeholder="Your reply", id="reply")
            with Horizontal(classes="buttons"):
                yield Button("Send", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        reply = self.query_one("#reply", Input).value.strip()
        if not reply:
            self.notify("the reply is empty", severity="warning", markup=False)
            return
        self.dismiss(reply)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
