"""A message's text as saved, and a conversation's title from its first message.

Kept apart from chatbot.conversation.session (which re-exports both) so the session stays
about turns; the CLI, the server and the app clean text the same way through these.
"""

import re
import unicodedata

TITLE_CHARS = 60
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")
# A byte that is not UTF-8 reaches Python as a lone surrogate (argv and the environment are
# decoded with surrogateescape); SQLite cannot store one, so it becomes U+FFFD.
_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def clean_text(text: str) -> str:
    """The message as saved: no terminal escapes or control characters except newline and tab,
    and each byte that was not UTF-8 shown as U+FFFD (not dropped: the reader sees where it was).
    The one rule for typed text: the CLI applies it to every free-text option too."""
    text = _ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _SURROGATE.sub(REPLACEMENT, text)
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")
    return text.strip()


def title_from(text: str) -> str:
    """A conversation title from its first message: the first line, shortened."""
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    return first if len(first) <= TITLE_CHARS else first[: TITLE_CHARS - 1].rstrip() + "…"
