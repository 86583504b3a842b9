"""The optional config file: defaults for the command-line options, so a user sets them once,
and the app's preferences (its theme, the conversation list shown or hidden), which it writes.

Precedence is flag > config file > built-in default. The file is TOML with top-level keys named
like the options (`gpu_layers = 24`, `flash_attn = true`, `threads = 2`, `model = "..."`).
"""

import argparse
import json
import os
import re
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chatbot.cli.inputs import checked
from chatbot.cli.options import COMMON_OPTIONS
from chatbot.errors import ChatbotError
from converter.files import atomic_write_text
from converter.paths import user_dir

CONFIG_ENV = "CHATBOT_CONFIG"
CONFIG_FILE = "config.toml"
_DESCRIPTIONS = {
    str: "text in quotes",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
}


def _value_type(options: dict[str, Any]) -> type:
    """The type an option's value has: its argparse `type`, bool for a --x/--no-x flag."""
    if options.get("action") is argparse.BooleanOptionalAction:
        return bool
    return options.get("type", str)


# Key -> the type its value must have (paths are given as strings): one key per option that
# every command takes, named as argparse names its value (`--gpu-layers` -> gpu_layers).
KEYS: dict[str, type] = {
    flag.removeprefix("--").replace("-", "_"): _value_type(options)
    for flag, options in COMMON_OPTIONS
}


@dataclass(frozen=True)
class AppPreferences:
    """What the app remembers between runs; None: not chosen yet (the app decides)."""

    theme: str | None = None
    conversation_list: bool | None = None  # shown on a wide enough screen


# Keys the app writes, one per AppPreferences field; never command-line options.
PREFERENCE_KEYS: dict[str, type] = {"theme": str, "conversation_list": bool}


def config_path() -> Path:
    """$CHATBOT_CONFIG (the file itself), else config.toml in the user config folder."""
    found = user_dir("config", CONFIG_ENV)
    return found if os.environ.get(CONFIG_ENV) else found / CONFIG_FILE


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The option defaults the config file sets; {} when there is no file."""
    return {k: v for k, v in _read(path or config_path()).items() if k in KEYS}


def load_preferences(path: Path | None = None) -> AppPreferences:
    """The app's preferences the config file holds (all None when there is no file)."""
    path = path or config_path()
    data = _read(path) if path.exists() else {}  # the app creates the file when it saves
    return AppPreferences(**{k: v for k, v in data.items() if k in PREFERENCE_KEYS})


def save_preferences(preferences: AppPreferences, path: Path | None = None) -> None:
    """Write the preferences into the config file atomically, keeping every other line."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        for key, value in asdict(preferences).items():
            if value is not None:
                text = _set_key(text, key, value)
        tomllib.loads(text)  # never write a file the next start could not read
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ChatbotError(f"cannot save preferences to the config file {path}: {exc}") from exc


def _set_key(text: str, key: str, value: str | bool) -> str:
    """`text` with the top-level `key = value` line replaced, or added before any table."""
    line = f"{key} = {json.dumps(value, ensure_ascii=False)}"  # JSON's true/"..." are TOML's
    lines = text.splitlines()
    table = next((i for i, old in enumerate(lines) if old.lstrip().startswith("[")), len(lines))
    pattern = re.compile(rf"\s*{re.escape(key)}\s*=")
    for i, old in enumerate(lines[:table]):
        if pattern.match(old):
            lines[i] = line
            return "\n".join(lines) + "\n"
    lines.insert(table, line)
    return "\n".join(lines) + "\n"


def _read(path: Path) -> dict[str, Any]:
    """Every key of the file, checked; {} when there is no file."""
    if path.is_dir():
        raise ChatbotError(f"config file {path} is a folder; {CONFIG_ENV} names the file itself")
    if not path.exists():
        if os.environ.get(CONFIG_ENV):  # a typo must not drop every setting without a word
            raise ChatbotError(
                f"config file {path} ({CONFIG_ENV}) does not exist; create it (empty is fine) "
                f"or unset {CONFIG_ENV}"
            )
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ChatbotError(f"cannot read the config file {path}: {exc}") from exc
    return {key: _checked(path, key, value) for key, value in data.items()}


def _checked(path: Path, key: str, value: object) -> object:
    expected = KEYS.get(key) or PREFERENCE_KEYS.get(key)
    if expected is None:
        known = ", ".join([*KEYS, *PREFERENCE_KEYS])
        raise ChatbotError(f"config file {path}: unknown key {key!r}; known keys: {known}")
    wanted = str if expected is Path else expected
    if wanted is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # `faq_confidence = 1` is a number too
    # bool is an int in Python: keep `threads = true` from passing as 1.
    if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
        raise ChatbotError(
            f"config file {path}: {key} must be {_DESCRIPTIONS[wanted]}, got {value!r}"
        )
    value = Path(value).expanduser() if expected is Path else value
    return checked(key, value, f"config file {path}: {key}")  # the rule flags follow too
