"""The Textual chat app: bindings, composition, and the two thread workers (load, reply).

The UI never touches llama.cpp or SQL directly: a `Session` does a turn, the `Store` lists and
edits conversations. The model loads in a thread worker at startup, and each reply streams from
a cancellable thread worker that posts its chunks to the reply's bubble, so the screen stays
live and Esc stops a reply within one token.
"""

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, ListView
from textual.worker import get_current_worker

from chatbot.engine import Engine, GenerationOptions, TextChunk
from chatbot.errors import ChatbotError
from chatbot.screens.confirm import ConfirmScreen
from chatbot.screens.export import ExportChoice, ExportScreen
from chatbot.screens.help import HelpScreen
from chatbot.screens.rename import RenameScreen
from chatbot.session import Notice, Session, TurnResult
from chatbot.store import Store
from chatbot.widgets.conversation_list import ConversationItem, ConversationList
from chatbot.widgets.input_box import InputBox
from chatbot.widgets.message_view import (
    MessageBubble,
    MessageView,
    ReplyChunk,
    ReplyEnded,
    ReplyNotice,
)
from chatbot.widgets.status_line import StatusLine

log = logging.getLogger("chatbot.app")


@dataclass
class EngineLoaded(Message):
    engine: Engine


@dataclass
class EngineFailed(Message):
    error: str


class ChatApp(App[None]):
    """Conversation list, conversation, editor and status line over one engine and one store."""

    CSS_PATH = "app.tcss"
    TITLE = "Offline chatbot"
    BINDINGS = [
        Binding("f1", "help", "Help"),
        Binding("escape", "stop_reply", "Stop reply"),
        Binding("ctrl+n", "new_conversation", "New"),
        Binding("f2", "rename_conversation", "Rename conversation"),
        Binding("f8", "delete_conversation", "Delete conversation"),
        Binding("ctrl+s", "export_conversation", "Export"),
        Binding("ctrl+f", "search", "Search conversations", show=False),
        Binding("ctrl+l", "focus_list", "Go to the conversation list", show=False),
        Binding("ctrl+o", "focus_input", "Go to the message editor", show=False),
        Binding("ctrl+p", "command_palette", "Command palette (themes, keys)", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        engine_factory: Callable[[], Engine],
        store: Store,
        *,
        system_prompt: str | None = None,
        knowledge_base: Any = None,
        options: GenerationOptions | None = None,
    ) -> None:
        super().__init__()
        self._engine_factory = engine_factory
        self.store = store
        self.system_prompt = system_prompt
        self.knowledge_base = knowledge_base
        self.options = options or GenerationOptions()
        self.engine: Engine | None = None
        self.engine_error: str | None = None
        self.session: Session | None = None
        self.conversation_id: int | None = None
        self.replying = False

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield ConversationList(id="sidebar")
            with Vertical(id="chat"):
                yield MessageView(knowledge_base=self.knowledge_base, id="messages")
                yield InputBox(id="input")
        yield StatusLine(id="status")
        yield Footer()

    async def on_mount(self) -> None:
        self.load_engine()
        conversations = []
        with self.shown_errors():
            conversations = self.store.list_conversations()
        await self.open_conversation(conversations[0].id if conversations else None)
        for warning in getattr(self.knowledge_base, "warnings", [])[:5]:
            self.notify(warning, title="FAQ", severity="warning", markup=False)
        self.query_one(InputBox).focus()

    async def on_unmount(self) -> None:
        """Stop a running reply, then free the model (its lock waits for the reply to end)."""
        self.workers.cancel_group(self, "reply")
        if self.engine is not None:
            self.engine.close()

    @contextmanager
    def shown_errors(self) -> Iterator[None]:
        """Turn a ChatbotError into an error notification: the app never crashes on one."""
        try:
            yield
        except ChatbotError as exc:
            self.notify(str(exc), severity="error", markup=False)

    # Engine

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def load_engine(self) -> None:
        """Load the model off the UI thread; a failure becomes a notification, not a crash."""
        try:
            engine = self._engine_factory()
        except ChatbotError as exc:
            self.post_message(EngineFailed(str(exc)))
            return
        except Exception as exc:  # llama.cpp or a remote server failing in an unforeseen way
            log.exception("loading the model failed")
            self.post_message(EngineFailed(f"cannot load the model: {exc}"))
            return
        if not self.post_message(EngineLoaded(engine)):
            engine.close()  # the app closed while the model was loading

    def on_engine_loaded(self, message: EngineLoaded) -> None:
        self.engine = message.engine
        status = self.query_one(StatusLine)
        status.set_engine(message.engine.info)
        status.set_state("Ready")

    def on_engine_failed(self, message: EngineFailed) -> None:
        self.engine_error = message.error
        self.query_one(StatusLine).set_state("No model")
        self.notify(message.error, title="Model", severity="error", timeout=30, markup=False)

    # Conversations

    async def open_conversation(self, conversation_id: int | None) -> None:
        """Show a saved conversation (None: a new, empty one) and its last reply's numbers."""
        messages, turns = [], []
        with self.shown_errors():
            if conversation_id is not None:
                messages = self.store.messages(conversation_id)
                turns = self.store.turns(conversation_id)
        self.conversation_id = conversation_id
        self.session = None
        await self.query_one(MessageView).show_history(messages)
        self.query_one(StatusLine).set_reply(turns[-1] if turns else None)
        await self.refresh_list()

    async def refresh_list(self) -> None:
        sidebar = self.query_one(ConversationList)
        with self.shown_errors():
            found = self.store.list_conversations(search=sidebar.search_text or None)
            await sidebar.show(found, self.conversation_id)

    def target_id(self) -> int | None:
        """The conversation an action applies to: the highlighted one in the list, else the open one."""
        list_view = self.query_one("#conversations", ListView)
        item = list_view.highlighted_child
        if list_view.has_focus and isinstance(item, ConversationItem):
            return item.conversation_id
        return self.conversation_id

    def busy(self) -> bool:
        """True (and says so) while a reply is being written."""
        if self.replying:
            self.notify("A reply is being written; press Esc to stop it first.", markup=False)
        return self.replying

    async def on_conversation_list_chosen(self, message: ConversationList.Chosen) -> None:
        if message.conversation_id != self.conversation_id and not self.busy():
            await self.open_conversation(message.conversation_id)
        self.query_one(InputBox).focus()

    async def on_conversation_list_search_changed(self) -> None:
        await self.refresh_list()

    async def action_new_conversation(self) -> None:
        if not self.busy():
            await self.open_conversation(None)
            self.query_one(InputBox).focus()

    def action_rename_conversation(self) -> None:
        target = self.target_id()
        if target is None:
            self.notify("Nothing to rename yet: send a message first.", markup=False)
            return
        with self.shown_errors():
            title = self.store.get_conversation(target).title

            async def rename(new_title: str | None) -> None:
                if new_title:
                    with self.shown_errors():
                        self.store.rename_conversation(target, new_title)
                    await self.refresh_list()

            self.push_screen(RenameScreen(title), rename)

    def action_delete_conversation(self) -> None:
        target = self.target_id()
        if target is None or (target == self.conversation_id and self.busy()):
            return
        with self.shown_errors():
            title = self.store.get_conversation(target).title

            async def delete(confirmed: bool | None) -> None:
                if not confirmed:
                    return
                with self.shown_errors():
                    self.store.delete_conversation(target)
                    self.notify(f"Deleted “{title}”.", markup=False)
                if target == self.conversation_id:
                    await self.open_conversation(None)
                else:
                    await self.refresh_list()

            self.push_screen(ConfirmScreen(f"Delete “{title}” and all its messages?"), delete)

    def action_export_conversation(self) -> None:
        target = self.target_id()
        if target is None:
            self.notify("Nothing to export yet: send a message first.", markup=False)
            return
        with self.shown_errors():
            title = self.store.get_conversation(target).title

            def export(choice: ExportChoice | None) -> None:
                if choice is None:
                    return
                from chatbot.export import export_conversation  # TEMP until export.py exists

                with self.shown_errors():
                    path = export_conversation(self.store, target, choice.fmt, choice.path)
                    self.notify(f"Exported to {path}", title="Export", markup=False)

            self.push_screen(ExportScreen(title, target), export)

    def action_search(self) -> None:
        self.query_one(ConversationList).focus_search()

    def action_focus_list(self) -> None:
        self.query_one("#conversations", ListView).focus()

    def action_focus_input(self) -> None:
        self.query_one(InputBox).focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.BINDINGS))

    # Replies

    async def on_input_box_submitted(self, message: InputBox.Submitted) -> None:
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
        with self.shown_errors():
            if self.session is None:
                self.session = Session(
                    self.engine,
                    self.store,
                    conversation_id=self.conversation_id,
                    system_prompt=self.system_prompt,
                    knowledge_base=self.knowledge_base,
                    options=self.options,
                )
            text = message.input_box.take_text()
            self.replying = True
            self.query_one(StatusLine).set_state("Writing…")
            bubble = await self.query_one(MessageView).start_turn(text)
            self.generate(self.session, text, bubble)

    @work(thread=True, exclusive=True, group="reply", exit_on_error=False)
    def generate(self, session: Session, text: str, bubble: MessageBubble) -> None:
        """Run one turn, posting chunks to the bubble in order; Esc cancels this worker."""
        worker = get_current_worker()
        saved_before = self._saved_count(session)
        result: TurnResult | None = None
        error: str | None = None
        try:
            for item in session.send(text, lambda: worker.is_cancelled):
                if isinstance(item, TextChunk):
                    bubble.post_message(ReplyChunk(item.text))
                elif isinstance(item, Notice):
                    bubble.post_message(ReplyNotice(item.text, item.level))
                else:
                    result = item
        except ChatbotError as exc:
            error = str(exc)
        except Exception as exc:  # an engine failing in an unforeseen way must not kill the app
            log.exception("generating a reply failed")
            error = f"the reply failed: {exc}"
        saved = self._saved_count(session) > saved_before
        bubble.post_message(ReplyEnded(result, error, text, user_saved=saved or result is not None))

    def _saved_count(self, session: Session) -> int:
        try:
            return len(session.messages())
        except ChatbotError:
            return 0

    async def on_reply_notice(self, message: ReplyNotice) -> None:
        severity = "warning" if message.level == "warning" else "information"
        self.notify(message.text, severity=severity, markup=False)

    async def on_reply_ended(self, message: ReplyEnded) -> None:
        self.replying = False
        status = self.query_one(StatusLine)
        status.set_state("Ready")
        if self.session is not None:
            self.conversation_id = self.session.conversation_id
        result = message.result
        if result is not None and result.stats is not None:
            status.set_reply(result.stats)
        if result is not None and result.stopped:
            self.notify("Reply stopped; the partial text is kept.", markup=False)
        if message.error is not None:
            self.notify(message.error, severity="error", markup=False)
            editor = self.query_one(InputBox)
            if not message.user_saved and not editor.text:
                editor.text = message.text  # nothing was saved: give the text back to edit
            await self.open_conversation(self.conversation_id)  # show exactly what was saved
        else:
            await self.refresh_list()

    def action_stop_reply(self) -> None:
        """Esc: cancel the reply worker; the session saves the partial reply as stopped."""
        if self.replying:
            self.workers.cancel_group(self, "reply")
            self.query_one(StatusLine).set_state("Stopping…")
