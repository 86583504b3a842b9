"""Export dialog: pick Markdown or JSON and a file; returns an `ExportChoice`, or None."""

import re
from dataclasses import dataclass
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, RadioButton, RadioSet

from chatbot.errors import ChatbotError
from converter.files import atomic_write_text

EXTENSIONS = {"md": ".md", "json": ".json"}


@dataclass(frozen=True)
class ExportChoice:
    fmt: str  # "md" | "json"
    path: Path


def default_export_path(title: str, conversation_id: int, fmt: str) -> Path:
    """A file in the current folder named after the conversation."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40] or "conversation"
    return Path.cwd() / f"{slug}-{conversation_id}{EXTENSIONS[fmt]}"


def write_export(text: str, path: Path) -> Path:
    """Write the export atomically (readable by the user only), so no half-written file is left."""
    path = path.expanduser().resolve()
    if path.is_dir():
        raise ChatbotError(f"{path} is a folder; give a file name to export to")
    if not path.parent.is_dir():
        raise ChatbotError(f"folder {path.parent} does not exist; choose another path")
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise ChatbotError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


class ExportScreen(ModalScreen[ExportChoice | None]):
    """Enter or Export dismisses with the choice; Esc or Cancel with None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, conversation_id: int) -> None:
        super().__init__()
        self._title = title
        self._id = conversation_id

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Export conversation", classes="title")
            with RadioSet(id="format"):
                yield RadioButton("Markdown", value=True, id="md")
                yield RadioButton("JSON", id="json")
            yield Label("File (relative paths are from the current folder):")
            yield Input(str(default_export_path(self._title, self._id, "md")), id="path")
            with Horizontal(classes="buttons"):
                yield Button("Export", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#path", Input).focus()  # Enter exports at once; Tab reaches the format

    @property
    def fmt(self) -> str:
        pressed = self.query_one("#format", RadioSet).pressed_button
        return pressed.id if pressed is not None and pressed.id else "md"

    @on(RadioSet.Changed)
    def _swap_extension(self) -> None:
        """Keep the file's extension in step with the format unless the user typed their own."""
        path_input = self.query_one("#path", Input)
        path = Path(path_input.value)
        if path.suffix in EXTENSIONS.values():
            path_input.value = str(path.with_suffix(EXTENSIONS[self.fmt]))

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        value = self.query_one("#path", Input).value.strip()
        if not value:
            self.notify("give a file to export to", severity="warning", markup=False)
            return
        self.dismiss(ExportChoice(self.fmt, Path(value).expanduser()))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
