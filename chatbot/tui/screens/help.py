"""F1: every key the app answers to, from chatbot.tui.commands (the bindings' own table)."""

import textwrap

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label

DIALOG_WIDTH = 90  # as app.tcss sizes .dialog.help
# Columns the dialog and the table take around the text: borders, padding, cell padding, the
# scrollbar; lines: borders, padding, the title and its margin, the closing hint.
CHROME = 2 + 4 + 4 + 2
CHROME_LINES = 2 + 2 + 2 + 1


class HelpScreen(ModalScreen[None]):
    """A table of (keys, command) rows; Esc, F1 or q closes it."""

    BINDINGS = [Binding("escape,f1,q", "close", "Close help")]

    def __init__(self, rows: list[tuple[str, str]]) -> None:
        super().__init__()
        self._rows = rows

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog help"):
            yield Label("Keys", classes="title")
            table: DataTable = DataTable(cursor_type="none", zebra_stripes=True)
            table.styles.max_height = max(3, self.app.size.height - CHROME_LINES)  # then scrolls
            table.add_columns("Key", "Command")
            keys_width = max(len(keys) for keys, _ in self._rows)
            width = max(16, min(self.app.size.width, DIALOG_WIDTH) - CHROME - keys_width)
            for keys, command in self._rows:  # wrapped to the screen: no column is cut off
                table.add_row(keys, Text(textwrap.fill(command, width)), height=None)
            yield table
            yield Label("Esc, F1 or q closes this help.", classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)
