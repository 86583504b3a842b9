"""F1: every key the app answers to, built from the live bindings so it cannot drift."""

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label

from chatbot.tui.widgets.input_box import NEWLINE_KEYS

EDITOR_KEYS = [
    ("ctrl+p", "Command palette (themes, all commands)"),
    ("enter", "Send the message"),
    (", ".join(NEWLINE_KEYS), "New line in the message"),
    ("tab / shift+tab", "Move between the search, list, conversation and editor"),
    ("up / down, enter", "In the list: move, open the conversation"),
    ("delete", "In the list: delete the conversation"),
    ("ctrl+z / ctrl+y", "In the editor: undo / redo"),
]


def key_rows(bindings: list[Binding]) -> list[tuple[str, str]]:
    """(keys, what they do) for the app's bindings, then the editor's and the list's keys."""
    rows = [(b.key.replace(",", ", "), b.tooltip or b.description) for b in bindings]
    return rows + EDITOR_KEYS


class HelpScreen(ModalScreen[None]):
    """A table of keys; Esc, F1 or q closes it."""

    BINDINGS = [Binding("escape,f1,q", "close", "Close help")]

    def __init__(self, bindings: list[Binding]) -> None:
        super().__init__()
        self._rows = key_rows(bindings)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog help"):
            yield Label("Keys", classes="title")
            table: DataTable = DataTable(cursor_type="none", zebra_stripes=True)
            table.add_columns("Key", "Action")
            table.add_rows(self._rows)
            yield table
            yield Label("Esc, F1 or q closes this help.", classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)
