"""The open conversation: its messages, the editor, and the worker that writes each reply.

A reply runs a `Session` turn (`send`, or `retry` to regenerate or resend an edited message)
in a cancellable thread worker, which posts its chunks to the reply's bubble (post_message is
thread-safe and never blocks, so a closing app cannot hang the worker). Esc cancels the
worker; the session then saves the partial reply marked as stopped. Each turn uses the
conversation's settings (chatbot.store.records.ConversationSettings) over the app's defaults.
"""

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from textual import on, work
from textual.containers import Vertical
from textual.message import Message
from textual.worker import get_current_worker

from chatbot.conversation.policy import TurnPolicy
from chatbot.conversation.session import Notice, Session, TurnResult, title_from
from chatbot.engines.base import Engine, GenerationOptions, TextChunk
from chatbot.errors import ChatbotError
from chatbot.store.records import ConversationSettings
from chatbot.store.store import Store
from chatbot.tui.widgets.choices import ChoiceList, open_choices
from chatbot.tui.widgets.feedback import shown_errors
from chatbot.tui.widgets.input_box import InputBox
from chatbot.tui.widgets.message_view import (
    MessageBubble,
    MessageView,
    ReplyChunk,
    ReplyEnded,
    ReplyNotice,
)
from chatbot.tui.widgets.status_line import ReplyProgress

if TYPE_CHECKING:
    from chatbot.faq.knowledge_base import KnowledgeBase

log = logging.getLogger("chatbot.tui.app")
EDITING = "Editing your last message · Enter resends it · Esc leaves it as it was"
Turn = Callable[[Callable[[], bool]], Iterator[TextChunk | Notice | TurnResult]]


@dataclass
class ReplyStarted(Message):
    """A reply is being written; `progress` counts it (the status line shows it live)."""

    progress: ReplyProgress


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
        self.options = options  # the app's defaults; a conversation's settings override them
        self.system_prompt = system_prompt
        self.knowledge_base = knowledge_base  # shows the entries a reply cites
        self.policy = policy  # what each turn's Session asks (the FAQ bot's), None: plain chat
        self.engine: Engine | None = None  # set by the app once the model has loaded
        self.engine_error: str | None = None
        self._opened: int | None = None  # None: a new conversation, saved on its first send
        self._seen: int | None = None  # the newest message shown (`catch_up`)
        self.settings = ConversationSettings(system_prompt=system_prompt)
        self._unsaved_settings = False  # set for a new conversation, saved on its first send
        self.session: Session | None = None
        self.replying = False
        self.editing = False  # the editor holds the last message, to resend in its place
        self._idle = threading.Event()  # clear while a reply worker's thread runs
        self._idle.set()

    def compose(self):
        yield MessageView(knowledge_base=self.knowledge_base, id="messages")
        yield InputBox(id="input")

    def on_mount(self) -> None:
        self.query_one(InputBox).sent_messages = self._sent_messages

    def _sent_messages(self) -> list[str]:
        with shown_errors(self):
            return self.store.recent_prompts()
        return []

    async def open(self, conversation_id: int | None) -> None:
        """Show a saved conversation, or an empty new one (None); never while replying."""
        if not self.replying:
            await self._show(conversation_id)

    async def _show(self, conversation_id: int | None) -> None:
        messages = []
        settings = ConversationSettings(system_prompt=self.system_prompt)
        with shown_errors(self):
            if conversation_id is not None:
                messages = self.store.messages(conversation_id)
                settings = self.store.settings(conversation_id)
        self._opened, self._seen = conversation_id, messages[-1].id if messages else None
        self.settings, self._unsaved_settings = settings, False
        self.session = None
        self.stop_editing()
        await self.query_one(MessageView).show_history(messages)
        await self._offer(open_choices(messages, self.knowledge_base) if self.faq_mode else ())

    async def catch_up(self) -> None:
        """Show what someone else added to the open conversation since it was shown: a
        customer writing through `chatbot serve`, a person's reply from the command line."""
        cid = self.conversation_id
        if cid is None or self.replying or self.editing:
            return
        with shown_errors(self):
            if self.store.last_message_id(cid) != self._seen:
                focused = self.app.focused  # the support team may be typing: keep their place
                await self._show(cid)
                if focused is not None and focused.is_attached:
                    focused.focus()

    @property
    def conversation_id(self) -> int | None:
        """The open conversation; a new one has an id once its first message is saved."""
        if self.session is not None and self.session.conversation_id is not None:
            return self.session.conversation_id
        return self._opened

    @property
    def faq_mode(self) -> bool:
        return self.policy is not None and self.settings.mode != "chat"

    def save_settings(self, settings: ConversationSettings) -> bool:
        """Keep the settings for the next turn (a new conversation keeps them until its first
        message saves it); False when they could not be saved."""
        if self.conversation_id is not None:
            try:
                self.store.save_settings(self.conversation_id, settings)
            except ChatbotError as exc:
                self.notify(str(exc), severity="error", markup=False)
                return False
        self.settings, self._unsaved_settings = settings, self.conversation_id is None
        self.drop_session()  # the next turn starts a session with the new settings
        return True

    def drop_session(self) -> None:
        """Forget the session (new settings, another model); the conversation stays open."""
        self._opened = self.conversation_id
        self.session = None

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

    # Message actions

    def last_sent(self) -> str | None:
        """The last message the user sent in this conversation, None (and says so) if none."""
        messages = []
        with shown_errors(self):
            if self.conversation_id is not None:
                messages = self.store.messages(self.conversation_id)
        sent = [m.content for m in messages if m.role == "user"]
        if not sent:
            self.notify("Nothing sent in this conversation yet.", markup=False)
        return sent[-1] if sent else None

    async def regenerate(self) -> None:
        """Send the last message again; the earlier reply stays in the store."""
        if self._can_send() and (text := self.last_sent()) is not None:
            self.stop_editing()
            await self._start(text, lambda session, stop: session.retry(None, stop), again=True)

    def edit_last(self) -> None:
        """Put the last message in the editor; Enter resends it in place of the original."""
        if self.busy() or (text := self.last_sent()) is None:
            return
        editor = self.query_one(InputBox)
        editor.text = text
        editor.move_cursor(editor.document.end)
        editor.focus()
        self.editing = True
        editor.border_title = EDITING
        editor.add_class("editing")
        self.app.refresh_bindings()  # the footer shows Esc now

    def stop_editing(self, clear: bool = False) -> None:
        if self.editing and clear:
            self.query_one(InputBox).clear()
        self.editing = False
        editor = self.query_one(InputBox)
        editor.border_title = None
        editor.remove_class("editing")
        self.app.refresh_bindings()

    # Sending

    def _can_send(self) -> bool:
        if self.busy():
            return False
        if self.engine is None:
            why = self.engine_error or "The model is still loading; your message stays in the box."
            self.notify(why, severity="warning", markup=False)
            return False
        return True

    @on(InputBox.Submitted)
    async def _submitted(self, message: InputBox.Submitted) -> None:
        await self._send(message.text)

    async def _send(self, text: str) -> None:
        """Send the editor's text; it stays in the editor when it cannot be sent."""
        if not self._can_send():
            return
        if not text.strip():
            self.notify("The message is empty; type something to send.", markup=False)
            return
        if self.editing:
            self.stop_editing()
            retry = lambda session, stop: session.retry(text, stop)  # noqa: E731
            await self._start(text, retry, again=True, from_editor=True)
        else:
            send = lambda session, stop: session.send(text, stop)  # noqa: E731
            await self._start(text, send, from_editor=True)

    async def _start(
        self,
        text: str,
        turn: Callable[[Session, Callable[[], bool]], Iterator],
        *,
        again: bool = False,
        from_editor: bool = False,
    ) -> None:
        """Show the turn (in place of the last one when it is sent `again`) and write it; the
        editor is emptied only once the turn can start, so a failure leaves the text there."""
        with shown_errors(self):
            session = self._session(text)
            if from_editor:
                self.query_one(InputBox).take_text()
            view = self.query_one(MessageView)
            if again:
                await view.drop_last_turn()
            self.replying = True
            self.app.refresh_bindings()
            self._idle.clear()
            picked_here = any(offered.has_focus for offered in view.query(ChoiceList))
            await view.query(ChoiceList).remove()  # an ask-back's choices go with its turn
            if picked_here:  # what the customer types next goes to the editor, not nowhere
                self.query_one(InputBox).focus()
            bubble = await view.start_turn(text)
            progress = ReplyProgress()
            self.post_message(ReplyStarted(progress))
            self.generate(lambda stop: turn(session, stop), text, bubble, progress)

    def _session(self, first_text: str) -> Session:
        """The open conversation's session, with its settings over the app's defaults; a new
        conversation with settings of its own is saved first, so they go with it."""
        if self.session is not None:
            return self.session
        settings = self.settings
        if self.conversation_id is None and self._unsaved_settings:
            conversation = self.store.new_conversation(
                title_from(first_text),
                system_prompt=settings.system_prompt,
                model=self.engine.info.model,
            )
            self.store.save_settings(conversation.id, settings)
            self._opened, self._unsaved_settings = conversation.id, False
        options = self.options
        if settings.temperature is not None:
            options = replace(options, temperature=settings.temperature)
        if settings.max_tokens is not None:
            options = replace(options, max_tokens=settings.max_tokens)
        self.session = Session(
            self.engine,
            self.store,
            conversation_id=self.conversation_id,
            system_prompt=settings.system_prompt,
            policy=self.policy if self.faq_mode else None,
            options=options,
        )
        return self.session

    @work(thread=True, exclusive=True, group="reply", exit_on_error=False)
    def generate(
        self, turn: Turn, text: str, bubble: MessageBubble, progress: ReplyProgress
    ) -> None:
        """Run one turn, posting chunks to the bubble in order; `stop` cancels this worker."""
        try:
            before = _last_saved(self.session)
            result, error = self._run_turn(turn, bubble, progress)
            self._seen = _last_saved(self.session)
            saved = result is not None or self._seen != before
            bubble.post_message(ReplyEnded(result, error, text, user_saved=saved))
        finally:
            self._idle.set()

    def _run_turn(
        self, turn: Turn, bubble: MessageBubble, progress: ReplyProgress
    ) -> tuple[TurnResult | None, str | None]:
        """Stream the session's reply into the bubble: (the saved turn, or why there is none)."""
        worker = get_current_worker()
        result: TurnResult | None = None
        try:
            for item in turn(lambda: worker.is_cancelled):
                if isinstance(item, TextChunk):
                    progress.add()
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

    async def _offer(self, choices) -> None:
        """An ask-back's choices under its reply, focused: 1-3 or a click picks one."""
        if choices:
            offered = ChoiceList(choices)
            await self.query_one(MessageView).mount(offered)
            offered.focus()
            offered.scroll_visible()

    async def on_choice_list_typed_on(self, message: ChoiceList.TypedOn) -> None:
        """Typing over the choices: the text goes to the editor, which takes the focus; an
        Enter typed before it had the focus sends it."""
        editor = self.query_one(InputBox)
        editor.focus()
        if message.send:
            await self._send(editor.text)
        else:
            editor.insert(message.text)

    async def on_choice_list_picked(self, message: ChoiceList.Picked) -> None:
        """A choice picked: sent as the customer's message, as if typed."""
        if self._can_send():
            text = message.text
            await self._start(text, lambda session, stop: session.send(text, stop))

    async def on_reply_ended(self, message: ReplyEnded) -> None:
        """On failure, say why, show exactly what was saved and give back unsaved text."""
        if message.error is not None:
            await self._show_failure(message)
        self.replying = False  # only now: the view is settled before another turn can start
        self.app.refresh_bindings()
        if message.result is not None and message.error is None:
            await self._offer(message.result.clarify)
        if message.result is not None and message.result.stopped:
            self.notify("Reply stopped; the partial text is kept.", markup=False)

    async def _show_failure(self, message: ReplyEnded) -> None:
        """Say why the turn failed, reload exactly what was saved, give back unsaved text."""
        self.notify(message.error, severity="error", markup=False)
        editor = self.query_one(InputBox)
        if not message.user_saved and not editor.text:
            editor.text = message.text  # nothing was saved: give the text back to edit
        session = self.session
        await self._show(self.conversation_id)
        if session is not None and session.conversation_id == self.conversation_id:
            self.session = session  # keep its record of history left out of the prompt


def _last_saved(session: Session | None) -> int | None:
    """The id of the conversation's last message (a turn sent again replaces, so a count
    cannot tell whether something was saved)."""
    try:
        messages = session.messages() if session is not None else []
    except ChatbotError:
        return None
    return messages[-1].id if messages else None
