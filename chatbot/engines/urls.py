"""Credentials in server URLs: split off before a request, hidden wherever a URL is shown.

A URL like `http://user:secret@host:8080` must work, yet its user and password must never reach
an error message, the status line, the database or the log. `redact` is the one place that hides
them; the remote engine uses it for every text that can hold a URL.
"""

import re
from urllib.parse import unquote, urlsplit, urlunsplit

REDACTED = "***"
# The user-info part of any URL inside a text: everything between "//" and the last "@" of the
# authority (a password may itself hold "@", so the match is greedy up to "/", "?", "#").
_USERINFO = re.compile(r"(?<=//)[^/?#\s]*@")


def redact(text: str) -> str:
    """`text` with the user and password of every URL in it replaced by ***."""
    return _USERINFO.sub(f"{REDACTED}@", text)


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without its user-info, and (user, password) when it had any."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    bare = urlunsplit(parts._replace(netloc=host))
    return bare, (unquote(user), unquote(password))
