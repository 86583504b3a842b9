"""The open conversation: its messages, the editor, and the worker that writes each reply.

A reply runs `Session.send` in a cancellable thread worker, which posts its chunks to the
reply's bubble (post_message is thread-safe and never blocks, so a closing app cannot hang the
worker). Esc cancels the worker; the session then saves the partial reply marked as stopped.
"""

import logging
import threading
from typing import TYPE_CHECKING

from textual import on, work
from textual.containers import Vertical
from textual.worker import get_current_worker

from chatbot.conversation.policy import TurnPolicy
from chatbot.conversation.session import Notice, Session, TurnResult
from chatbot.engines.base import Engine, GenerationOptions, TextChunk
from chatbot.errors import ChatbotError
from chatbot.store.store import Store
from chatbot.tui.widgets.feedback import shown_errors
from chatbot.tui.widgets.input_box import InputBox
from chatbot.tui.widgets.message_view import (
    MessageBubble,
    MessageView,
    ReplyChunk,
    ReplyEnded,
    ReplyNotice,
)

if TYPE_CHECKING:
    from chatbot.faq.knowledge_base import KnowledgeBase

log = logging.getLogger("chatbot.tui.app")


class ChatPanel(Vertical):
    """Shows one conversation and sends what the user types to it through a `Session`."""

    def __init__(
        self,
        store: Store,
        *,
        options: GenerationOptions,
        system_prompt: str | None = None,
        knowledge_base: "KnowledgeBase | None" = None,
        policy: TurnPolicy | None = None,
        id: str | None = None,  # noqa: A002 (Textual's name)
    ) -> None:
        super().__init__(id=id)
        self.store = store
        self.options = options
        self.system_prompt = system_prompt
        self.knowledge_base = knowledge_base  # shows the entries a reply cites
        self.policy = policy  # what each turn's Session asks (the FAQ bot's), None: plain chat
        self.engine: Engine | None = None  # set by the app once the model has loaded
        self.engine_error: str | None = None
        self._opened: int | None = None  # None: a new conversation, saved on its first send
        self.session: Session | None = None
        self.replying = False
        self._idle = threading.Event()  # clear while a reply worker's thread runs
        self._idle.set()

    def compose(self):
        yield MessageView(knowledge_base=self.knowledge_base, id="messages")
        yield InputBox(id="input")

    async def open(self, conversation_id: int | None) -> None:
        """Show a saved conversation, or an empty new one (None); never while replying."""
        if self.replying:
            return
        messages = []
        with shown_errors(self):
            messages = self.store.messages(conversation_id) if conversation_id is not None else []
        self._opened = conversation_id
        self.session = None
        await self.query_one(MessageView).show_history(messages)

    @property
    def conversation_id(self) -> int | None:
        """The open conversation; a new one has an id once its first message is saved."""
        if self.session is not None and self.session.conversation_id is not None:
            return self.session.conversation_id
        return self._opened

    def busy(self) -> bool:
        """True (and says so) while a reply is being written."""
        if self.replying:
            self.notify("A reply is being written; press Esc to stop it first.", markup=False)
        return self.replying

    def stop(self, wait_s: float = 0.0) -> bool:
        """Cancel the reply worker; the session saves the partial reply as stopped.

        With `wait_s`, block until the worker's thread has saved it (the app does this when
        closing, so the caller can close the store and the model safely afterwards).
        """
        self.workers.cancel_group(self, "reply")
        return self._idle.wait(wait_s) if wait_s else self._idle.is_set()

    @on(InputBox.Submitted)
    async def _send(self, message: InputBox.Submitted) -> None:
        """Send the editor's text; it stays in the editor when it cannot be sent."""
        if self.busy():
            return
        if self.engine is None:
            why = self.engine_error or "The model is still loading; your message stays in the box."
            self.notify(why, severity="warning", markup=False)
            return
        if not message.text.strip():
            self.notify("The message is empty; type something to send.", markup=False)
            return
        with shown_errors(self):
            if self.session is None:
                self.session = Session(
                    self.engine,
                    self.store,
                    conversation_id=self.conversation_id,
                    system_prompt=self.system_prompt,
                    policy=self.policy,
                    options=self.options,
                )
            text = message.input_box.take_text()
            self.replying = True
            self._idle.clear()
            bubble = await self.query_one(MessageView).start_turn(text)
            self.generate(self.session, text, bubble)

    @work(thread=True, exclusive=True, group="reply", exit_on_error=False)
    def generate(self, session: Session, text: str, bubble: MessageBubble) -> None:
        """Run one turn, posting chunks to the bubble in order; `stop` cancels this worker."""
        try:
            saved_before = _saved_count(session)
            result, error = self._run_turn(session, text, bubble)
            saved = result is not None or _saved_count(session) > saved_before
            bubble.post_message(ReplyEnded(result, error, text, user_saved=saved))
        finally:
            self._idle.set()

    def _run_turn(
        self, session: Session, text: str, bubble: MessageBubble
    ) -> tuple[TurnResult | None, str | None]:
        """Stream the session's reply into the bubble: (the saved turn, or why there is none)."""
        worker = get_current_worker()
        result: TurnResult | None = None
        try:
            for item in session.send(text, lambda: worker.is_cancelled):
                if isinstance(item, TextChunk):
                    bubble.post_message(ReplyChunk(item.text))
                elif isinstance(item, Notice):
                    bubble.post_message(ReplyNotice(item.text, item.level))
                else:
                    result = item
        except ChatbotError as exc:
            return result, str(exc)
        except Exception as exc:  # an engine failing in an unforeseen way must not kill the app
            log.exception("generating a reply failed")
            return result, f"the reply failed: {exc}"
        return result, None

    def on_reply_notice(self, message: ReplyNotice) -> None:
        severity = "warning" if message.level == "warning" else "information"
        self.notify(message.text, severity=severity, markup=False)

    async def on_reply_ended(self, message: ReplyEnded) -> None:
        """On failure, say why, show exactly what was saved and give back unsaved text."""
        self.replying = False
        if message.result is not None and message.result.stopped:
            self.notify("Reply stopped; the partial text is kept.", markup=False)
        if message.error is None:
            return
        self.notify(message.error, severity="error", markup=False)
        editor = self.query_one(InputBox)
        if not message.user_saved and not editor.text:
            editor.text = message.text  # nothing was saved: give the text back to edit
        session = self.session
        await self.open(self.conversation_id)
        if session is not None and session.conversation_id == self.conversation_id:
            self.session = session  # keep its record of history left out of the prompt


def _saved_count(session: Session) -> int:
    try:
        return len(session.messages())
    except ChatbotError:
        return 0
