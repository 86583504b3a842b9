"""Every option value checked by one rule at the edge, whether a flag or the config file set it.

- Free text (the message, --system, --handoff-reply, --search) is cleaned like a message
  (chatbot.conversation.session.clean_text): terminal escapes and control characters other
  than newline and tab go, and each byte that is not UTF-8 becomes U+FFFD.
- Paths, URLs, keys and host names must be exact: a byte that is not UTF-8 (or a control
  character in a URL or key) is an error, since a replacement would name another file or server.
- Numbers have bounds; --ctx also has the model's training context as its top (`check_ctx`).
"""

import argparse
import math
import unicodedata
from pathlib import Path

from chatbot.conversation.session import clean_text
from chatbot.errors import ChatbotError

# Options whose value is typed text, kept as typed but cleaned (by argparse's dest name).
TEXT_OPTIONS = frozenset({"text", "system", "handoff_reply", "search"})
# The smallest value of each bounded number (by dest name); none has a fixed top.
MINIMUMS = {"ctx": 64, "max_tokens": 1, "threads": 1, "gpu_layers": -1}
MIN_CTX = MINIMUMS["ctx"]


def check_args(args: argparse.Namespace) -> argparse.Namespace:
    """The parsed options with text cleaned; ChatbotError for a value that cannot be used."""
    for name, value in vars(args).items():
        setattr(args, name, checked(name, value, _flag(name)))
    return args


def checked(name: str, value: object, label: str) -> object:
    """`value` of option `name` (dest name) by the rules above; `label` names it in errors
    (`--system`, or `config file X: system`)."""
    if isinstance(value, list | tuple):
        return type(value)(checked(name, item, label) for item in value)
    if isinstance(value, Path):
        return _exact_path(value, label)
    if isinstance(value, str):
        return clean_text(value) if name in TEXT_OPTIONS else _exact(value, label)
    if isinstance(value, float) and not math.isfinite(value):
        raise ChatbotError(f"{label} must be a finite number, got {value}")
    bounded = isinstance(value, int) and not isinstance(value, bool) and name in MINIMUMS
    if bounded and value < MINIMUMS[name]:
        raise ChatbotError(f"{label} must be at least {MINIMUMS[name]}, got {value}")
    return value


def check_ctx(model: Path, ctx: int) -> None:
    """ChatbotError when `ctx` is more than the context the GGUF says its model was trained on
    (`<arch>.context_length`, llama.cpp's n_ctx_train); beyond it replies fall apart."""
    from chatbot.engines.offload import read_header_values  # the header only, no llama.cpp

    try:
        values = read_header_values(model)
    except ChatbotError:
        return  # loading the model says what is wrong with the file
    key = f"{values.get('general.architecture')}.context_length"
    trained = values.get(key)
    if not isinstance(trained, int) or trained <= 0 or ctx <= trained:
        return
    raise ChatbotError(
        f"--ctx {ctx} is more than the {trained} tokens {model.name} was trained on; use "
        f"--ctx {MIN_CTX} to {trained}. If the model supports a longer context (RoPE scaling), "
        f"record that length in the file first: gguf-set-metadata {model} {key} N"
    )


def _flag(name: str) -> str:
    if name == "text":
        return "the message"
    if name == "questions":
        return "QUESTIONS"
    return "--" + name.replace("_", "-")


def _exact(value: str, label: str) -> str:
    """The value itself (never shown: it may be a key, or a URL with a password)."""
    if _has_bad_bytes(value):
        raise ChatbotError(f"{label} has bytes that are not UTF-8; give it as UTF-8 text")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ChatbotError(f"{label} has a control character; give it without")
    return value


def _exact_path(path: Path, label: str) -> Path:
    if _has_bad_bytes(str(path)):
        raise ChatbotError(
            f"{label} {_shown(str(path))}: the path has bytes that are not UTF-8; rename the "
            "file or folder, or give another path"
        )
    return path


def _has_bad_bytes(text: str) -> bool:
    """Whether `text` holds a byte that was not UTF-8 (Python decodes one as a lone surrogate)."""
    return any(unicodedata.category(ch) == "Cs" for ch in text)


def _shown(text: str) -> str:
    """`text` with each byte that is not UTF-8 written as \\xNN, printable anywhere."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no byte stands for
        return ascii(text)
