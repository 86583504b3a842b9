"""One customer turn: a Session runs it in a worker thread; its items reach the event loop.

`open_session` is the one place the server builds a Session, the way `chatbot ask` does, so
the answers, hand-offs, history and latency rows are those of the app and the CLI. The model
call blocks, so each turn runs in a thread of its own (at most `--parallel` of them, see
chatbot.serve.limiter) and hands its chunks to the request's coroutine through a queue.
"""

import asyncio
import contextlib
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chatbot.conversation.session import Session, title_from
from chatbot.engines.base import Engine, GenerationOptions
from chatbot.store.store import Store

if TYPE_CHECKING:
    from chatbot.conversation.policy import TurnPolicy
    from chatbot.faq.load import FaqEntry

log = logging.getLogger("chatbot.serve")
TOKEN_BYTES = 24  # 192 random bits per customer token


@dataclass(frozen=True)
class Backend:
    """What every turn shares: the engine, the store, the FAQ policy and its defaults."""

    engine: Engine
    store: Store
    policy: "TurnPolicy | None" = None
    system_prompt: str | None = None
    temperature: float = GenerationOptions.temperature
    faq_entry: "Callable[[str], FaqEntry | None] | None" = None  # a cited entry, by id


def open_session(backend: Backend, conversation_id: int, options: GenerationOptions) -> Session:
    """The Session of one served turn (the glue to keep in step with `chatbot ask`)."""
    return Session(
        backend.engine,
        backend.store,
        conversation_id=conversation_id,
        system_prompt=backend.system_prompt,
        policy=backend.policy,
        options=options,
    )


def start_conversation(backend: Backend, first_message: str) -> tuple[int, str]:
    """A new customer's conversation: its row id, and the unguessable token they are given."""
    conversation = backend.store.new_conversation(
        title_from(first_message),
        system_prompt=backend.system_prompt,
        model=backend.engine.info.model,
    )
    token = secrets.token_urlsafe(TOKEN_BYTES)
    backend.store.add_customer_token(conversation.id, token)
    return conversation.id, token


END = object()  # the last item a TurnStream gives


class TurnStream:
    """Runs `produce(should_stop)` in a thread; `next()` gives its items, then END.

    `stop()` asks the turn to end early (the customer left): the session then saves the reply
    so far as stopped, with its latency row. `on_done` runs on the event loop once the thread
    has finished, whatever happened.
    """

    def __init__(
        self,
        produce: Callable[[Callable[[], bool]], Iterator[object]],
        on_done: Callable[[], None],
    ):
        self._loop = asyncio.get_running_loop()
        self._items: asyncio.Queue[object] = asyncio.Queue()
        self._stop = threading.Event()
        self._produce = produce
        self._on_done = on_done
        threading.Thread(target=self._work, name="chatbot-turn", daemon=True).start()

    def _work(self) -> None:
        try:
            for item in self._produce(self._stop.is_set):
                self._call(self._items.put_nowait, item)
        except Exception as exc:  # handed to the request, which answers it as an HTTP error
            self._call(self._items.put_nowait, _Failed(exc))
        finally:
            self._call(self._finish)

    def _finish(self) -> None:
        """On the loop: free the slot and the conversation before the reply can be complete,
        so the customer's next message never finds its conversation still busy."""
        self._on_done()
        self._items.put_nowait(END)

    def _call(self, function: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server has stopped
            self._loop.call_soon_threadsafe(function, *args)

    async def next(self) -> object:
        """The next item (a TextChunk, Notice or TurnResult), END, or the turn's exception."""
        item = await self._items.get()
        if isinstance(item, _Failed):
            raise item.error
        return item

    def stop(self) -> None:
        self._stop.set()


@dataclass(frozen=True)
class _Failed:
    error: Exception
