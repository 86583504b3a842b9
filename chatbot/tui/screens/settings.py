"""Conversation settings: the model (a GGUF from the model cache), system prompt, temperature
and longest reply, and in FAQ mode whether to answer from the FAQ. Returns the settings to
keep for the conversation's next turns, or None when cancelled."""

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, TextArea

from chatbot.store.records import ConversationSettings
from converter.paths import cache_dir

MAX_TEMPERATURE = 2.0
DEFAULT_MODEL = ""  # the Select's value for "the model the app was started with"


def cached_models() -> list[str]:
    """The GGUF files in the model cache (converter.paths), by name."""
    folder = cache_dir() / "models"
    return sorted(path.name for path in folder.glob("*.gguf")) if folder.is_dir() else []


@dataclass(frozen=True)
class SettingsDefaults:
    """What the app uses when a conversation sets nothing, shown beside each field."""

    model: str  # the model the app was started with
    temperature: float
    max_tokens: int
    models: tuple[str, ...] = ()  # GGUFs to choose from; () when the model cannot change
    faq_file: Path | None = None  # the FAQ the app was started with (FAQ mode)


class SettingsScreen(ModalScreen[ConversationSettings | None]):
    """Save (or Enter in a field) dismisses with the settings; Esc or Cancel with None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: ConversationSettings, defaults: SettingsDefaults) -> None:
        super().__init__()
        self._current = current
        self._defaults = defaults

    def compose(self) -> ComposeResult:
        current, defaults = self._current, self._defaults
        with VerticalScroll(classes="dialog settings"):
            yield Label("Conversation settings", classes="title")
            yield Label("Model (from the model cache):")
            choices = [(Text(f"{defaults.model} (as started)"), DEFAULT_MODEL)]
            choices += [(Text(name), name) for name in defaults.models if name != defaults.model]
            chosen = current.model_file if current.model_file in defaults.models else DEFAULT_MODEL
            yield Select(
                choices,
                value=chosen,
                allow_blank=False,
                id="model",
                compact=True,
                disabled=not defaults.models,
            )
            if not defaults.models:
                yield Label("Fixed for this run (--server or no cached models).", classes="hint")
            yield Label("System prompt:")
            yield TextArea(current.system_prompt or "", id="system", soft_wrap=True)
            temperature = "" if current.temperature is None else f"{current.temperature:g}"
            yield Label(Content(f"Temperature, 0 to {MAX_TEMPERATURE:g}:"))
            yield Input(
                temperature,
                placeholder=f"{defaults.temperature:g} (the app's default)",
                id="temperature",
                type="number",
                compact=True,
            )
            tokens = "" if current.max_tokens is None else str(current.max_tokens)
            yield Label("Longest reply, in tokens:")
            yield Input(
                tokens,
                placeholder=f"{defaults.max_tokens} (the app's default)",
                id="max-tokens",
                type="integer",
                compact=True,
            )
            if defaults.faq_file is not None:
                yield Label(Content(f"FAQ file: {defaults.faq_file}"))
                label = "Answer from the FAQ (off: plain chat)"
                yield Checkbox(label, current.mode != "chat", id="faq", compact=True)
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#system", TextArea).focus()

    def _number(self, field: str, kind: type, low: float, high: float) -> float | int | None:
        """The field's number, None when empty; ValueError says what is wrong."""
        text = self.query_one(f"#{field}", Input).value.strip()
        if not text:
            return None
        value = kind(text)
        if not low <= value <= high:
            raise ValueError(f"{field.replace('-', ' ')} must be from {low:g} to {high:g}")
        return value

    def chosen(self) -> ConversationSettings:
        """The settings as filled in; ValueError for a number out of range."""
        model = self.query_one("#model", Select).value
        faq = self.query(Checkbox)
        mode = None
        if faq:
            mode = "faq" if faq.first(Checkbox).value else "chat"
        return ConversationSettings(
            system_prompt=self.query_one("#system", TextArea).text.strip(),
            model_file=model if isinstance(model, str) and model != DEFAULT_MODEL else None,
            temperature=self._number("temperature", float, 0.0, MAX_TEMPERATURE),
            max_tokens=self._number("max-tokens", int, 1, 1_000_000),
            mode=mode,
        )

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        try:
            settings = self.chosen()
        except ValueError as exc:
            why = str(exc) if "must be" in str(exc) else "give a number"
            self.notify(why, severity="warning", markup=False)
            return
        self.dismiss(settings)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
