"""The optional config file: defaults for the command-line options, so a user sets them once.

Precedence is flag > config file > built-in default. The file is TOML with top-level keys named
like the options (`gpu_layers = 24`, `flash_attn = true`, `threads = 2`, `model = "..."`).
"""

import argparse
import os
import tomllib
from pathlib import Path
from typing import Any

from chatbot.cli.options import COMMON_OPTIONS
from chatbot.errors import ChatbotError
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


def config_path() -> Path:
    """$CHATBOT_CONFIG (the file itself), else config.toml in the user config folder."""
    found = user_dir("config", CONFIG_ENV)
    return found if os.environ.get(CONFIG_ENV) else found / CONFIG_FILE


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The option defaults the config file sets; {} when there is no file."""
    path = path or config_path()
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ChatbotError(f"cannot read the config file {path}: {exc}") from exc
    return {key: _checked(path, key, value) for key, value in data.items()}


def _checked(path: Path, key: str, value: object) -> object:
    expected = KEYS.get(key)
    if expected is None:
        raise ChatbotError(
            f"config file {path}: unknown key {key!r}; known keys: {', '.join(KEYS)}"
        )
    wanted = str if expected is Path else expected
    if wanted is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # `faq_confidence = 1` is a number too
    # bool is an int in Python: keep `threads = true` from passing as 1.
    if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
        raise ChatbotError(
            f"config file {path}: {key} must be {_DESCRIPTIONS[wanted]}, got {value!r}"
        )
    return Path(value).expanduser() if expected is Path else value
