"""How the app reports a problem the user can fix: a notification, never a crash."""

from collections.abc import Iterator
from contextlib import contextmanager

from textual.app import App
from textual.widget import Widget

from chatbot.errors import ChatbotError


@contextmanager
def shown_errors(node: App | Widget) -> Iterator[None]:
    """Turn a ChatbotError raised inside the block into an error notification."""
    try:
        yield
    except ChatbotError as exc:
        node.notify(str(exc), severity="error", markup=False)
