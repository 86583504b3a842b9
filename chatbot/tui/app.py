"""The Textual chat app: bindings, composition, and what spans widgets (model, conversations).

The UI never touches llama.cpp or SQL directly: the `ChatPanel` runs each turn through a
`Session`, and the `Store` lists and edits conversations. The model loads in a thread worker
at startup, so the window is live at once and a loading error is a notification, not a crash;
a conversation whose settings name another model loads that one the same way.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from textual import work
from textual.app import App, ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Footer

from chatbot.conversation.export import export_conversation
from chatbot.engines.base import Engine, GenerationOptions
from chatbot.errors import ChatbotError
from chatbot.store.records import Conversation, ConversationSettings
from chatbot.store.store import Store
from chatbot.tui.commands import AppCommands, bindings, key_rows
from chatbot.tui.layout import BREAKPOINTS, LIST_CHECK_S, ListAndTheme
from chatbot.tui.screens.confirm import ConfirmScreen
from chatbot.tui.screens.export import ExportChoice, ExportScreen, write_export
from chatbot.tui.screens.help import HelpScreen
from chatbot.tui.screens.rename import PersonReplyScreen, RenameScreen
from chatbot.tui.screens.settings import SettingsDefaults, SettingsScreen, cached_models
from chatbot.tui.signals import close_on_signals, default_signals
from chatbot.tui.widgets.chat_panel import ChatPanel, ReplyStarted
from chatbot.tui.widgets.choices import conversation_to_open
from chatbot.tui.widgets.conversation_list import ConversationList
from chatbot.tui.widgets.feedback import shown_errors
from chatbot.tui.widgets.input_box import InputBox
from chatbot.tui.widgets.message_view import MessageView, ReplyEnded
from chatbot.tui.widgets.status_line import StatusLine
from converter.paths import cache_dir

if TYPE_CHECKING:
    from chatbot.faq.knowledge_base import KnowledgeBase

log = logging.getLogger("chatbot.tui.app")
CLOSE_WAIT_S = 30.0  # on quit, how long a reply may take to stop (one token, or a prompt eval)


@dataclass
class EngineLoaded(Message):
    engine: Engine
    model_file: str | None = None  # from the model cache; None: the model the app started with


@dataclass
class EngineFailed(Message):
    error: str
    model_file: str | None = None


class ChatApp(ListAndTheme, App[None]):
    """Conversation list, conversation, editor and status line over one engine and one store."""

    CSS_PATH = "app.tcss"
    TITLE = "Offline chatbot"
    BINDINGS = bindings()  # chatbot.tui.commands: F1, the palette and README share the table
    COMMANDS = App.COMMANDS | {AppCommands}
    HORIZONTAL_BREAKPOINTS = BREAKPOINTS  # the list hides below 80 columns (Ctrl+B shows it)

    def __init__(
        self,
        engine_factory: Callable[[], Engine],
        store: Store,
        *,
        system_prompt: str | None = None,
        knowledge_base: "KnowledgeBase | None" = None,
        options: GenerationOptions | None = None,
        load_model: Callable[[Path], Engine] | None = None,
        faq_answer: str = "auto",
    ) -> None:
        """`load_model` loads a GGUF a conversation's settings choose from the model cache;
        without it (a remote server) every conversation uses the engine_factory's model."""
        super().__init__()
        self._engine_factory = engine_factory
        self._load_model = load_model
        self._model_file: str | None = None  # the model wanted now; None: as started
        self._started_model: str | None = None  # its name, once loaded
        self._list_timer: Timer | None = None  # the look at the store every LIST_CHECK_S
        self.store = store
        policy = None
        if knowledge_base is not None:
            # Imported here: a knowledge base given means the FAQ modules are loaded already,
            # and plain chat then never loads them.
            from chatbot.faq.policy import FaqPolicy

            policy = FaqPolicy(knowledge_base, faq_answer)  # type: ignore[arg-type]
        self.knowledge_base = knowledge_base
        self.panel = ChatPanel(
            store,
            options=options or GenerationOptions(),
            system_prompt=system_prompt,
            knowledge_base=knowledge_base,
            policy=policy,
            id="chat",
        )

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield ConversationList(id="sidebar")
            yield self.panel
        yield StatusLine(id="status")
        yield Footer(compact=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """While a dialog is open, only quitting reaches the app; other keys are the dialog's.
        The footer shows Stop only while there is something to stop, and Retry otherwise."""
        if isinstance(self.screen, ModalScreen):
            return action == "quit"
        if action == "stop_reply":
            return self.panel.replying or self.panel.editing
        return action != "regenerate" or not self.panel.replying

    @property
    def engine(self) -> Engine | None:
        return self.panel.engine

    @property
    def conversation_id(self) -> int | None:
        return self.panel.conversation_id

    async def on_mount(self) -> None:
        close_on_signals(self)  # SIGTERM, SIGHUP: like Ctrl+Q, the reply is saved first
        self.apply_preferences()
        self.load_engine(self._engine_factory)
        conversations = []
        with shown_errors(self):
            conversations = self.store.list_conversations()
        ids = [c.id for c in conversations]
        with shown_errors(self):  # FAQ mode: a new conversation, not the last general chat
            ids = [conversation_to_open(self.store, ids, self.panel.faq_mode)]
        await self.open_conversation(ids[0] if ids else None)
        self._list_timer = self.set_interval(LIST_CHECK_S, self.check_store)
        for warning in self.knowledge_base.warnings[:5] if self.knowledge_base else []:
            self.notify(warning, title="FAQ", severity="warning", markup=False)
        self.query_one(InputBox).focus()

    async def on_unmount(self) -> None:
        """Let a running reply stop and save its partial text, then free the model."""
        if self._list_timer is not None:
            self._list_timer.stop()  # no look at the store while it closes
        if not self.panel.stop(wait_s=CLOSE_WAIT_S):
            log.warning("the reply did not stop within %s s of closing", CLOSE_WAIT_S)
        if self.engine is not None:
            self.engine.close()
        default_signals()

    # Model

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def load_engine(self, factory: Callable[[], Engine], model_file: str | None = None) -> None:
        """Load the model off the UI thread; a failure becomes a notification, not a crash."""
        try:
            engine = factory()
        except ChatbotError as exc:
            self.post_message(EngineFailed(str(exc), model_file))
            return
        except Exception as exc:  # llama.cpp or a remote server failing in an unforeseen way
            log.exception("loading the model failed")
            self.post_message(EngineFailed(f"cannot load the model: {exc}", model_file))
            return
        if not self.post_message(EngineLoaded(engine, model_file)):
            engine.close()  # the app closed while the model was loading

    def on_engine_loaded(self, message: EngineLoaded) -> None:
        if message.model_file != self._model_file:
            message.engine.close()  # another model was chosen while this one loaded
            return
        if message.model_file is None:
            self._started_model = message.engine.info.model
        self.panel.engine, self.panel.engine_error = message.engine, None
        status = self.query_one(StatusLine)
        status.set_engine(message.engine.info)
        status.set_state("Ready")

    def on_engine_failed(self, message: EngineFailed) -> None:
        if message.model_file != self._model_file:
            return
        self.panel.engine_error = message.error
        self.query_one(StatusLine).set_state("No model")
        self.notify(message.error, title="Model", severity="error", timeout=30, markup=False)

    def use_model(self, model_file: str | None) -> None:
        """Load the model a conversation's settings name (None: as started) unless it is the
        one loaded; never while a reply is written (the caller checks)."""
        if model_file == self._model_file or self._load_model is None:
            return
        path = cache_dir() / "models" / model_file if model_file else None
        if path is not None and not path.is_file():
            self.notify(f"{path} is missing; keeping the model loaded.", severity="warning")
            return
        old, self.panel.engine = self.panel.engine, None
        self.panel.drop_session()
        self._model_file = model_file
        status = self.query_one(StatusLine)
        status.set_engine(None)
        status.set_state("Loading model…")
        if old is not None:
            old.close()
        factory = partial(self._load_model, path) if path else self._engine_factory
        self.load_engine(factory, model_file)

    def action_settings(self) -> None:
        """Conversation settings; saved ones apply from the next turn."""
        if self.panel.busy():
            return
        options = self.panel.options
        defaults = SettingsDefaults(
            model=self._started_model or "the model given at start",
            temperature=options.temperature,
            max_tokens=options.max_tokens,
            models=tuple(cached_models()) if self._load_model is not None else (),
            faq_file=self.knowledge_base.path if self.knowledge_base is not None else None,
        )

        def chosen(settings: ConversationSettings | None) -> None:
            if settings is not None and self.panel.save_settings(settings):
                self.use_model(settings.model_file)
                self._show_mode()
                self.notify("Settings saved: the next reply uses them.", markup=False)

        self.push_screen(SettingsScreen(self.panel.settings, defaults), chosen)

    def _show_mode(self) -> None:
        self.query_one(StatusLine).set_mode("FAQ" if self.panel.faq_mode else "chat")

    # Replies

    def on_reply_started(self, message: ReplyStarted) -> None:
        status = self.query_one(StatusLine)
        status.set_state("Writing…")
        status.start_reply(message.progress)

    async def on_reply_ended(self, message: ReplyEnded) -> None:
        status = self.query_one(StatusLine)
        status.set_state("Ready")
        stats = message.result.stats if message.result is not None else None
        status.set_reply(stats or status.last_stats)
        await self.refresh_list()

    def action_stop_reply(self) -> None:
        """Esc: stop the reply (the session saves the partial text, marked as stopped), or
        stop editing the last message."""
        if self.panel.replying:
            self.panel.stop()
            self.query_one(StatusLine).set_state("Stopping…")
        elif self.panel.editing:
            self.panel.stop_editing(clear=True)
            self.notify("Edit cancelled: the message stays as it was.", markup=False)

    async def action_regenerate(self) -> None:
        await self.panel.regenerate()

    def action_edit_last(self) -> None:
        self.panel.edit_last()

    def action_copy_message(self) -> None:
        self.query_one(MessageView).action_copy_message()

    def action_copy_code(self) -> None:
        self.query_one(MessageView).action_copy_code()

    # Conversations

    async def open_conversation(self, conversation_id: int | None) -> None:
        """Show a saved conversation (None: a new, empty one) and its last reply's numbers."""
        turns = []
        with shown_errors(self):
            turns = self.store.turns(conversation_id) if conversation_id is not None else []
        await self.panel.open(conversation_id)
        self.query_one(StatusLine).set_reply(turns[-1] if turns else None)
        self._show_mode()
        if not self.panel.replying:
            self.use_model(self.panel.settings.model_file)
        await self.refresh_list()

    def target(self, verb: str) -> Conversation | None:
        """The conversation an action applies to: highlighted in the focused list, else open."""
        target_id = self.query_one(ConversationList).highlighted_id or self.conversation_id
        if target_id is None:
            self.notify(f"Nothing to {verb} yet: send a message first.", markup=False)
            return None
        with shown_errors(self):
            return self.store.get_conversation(target_id)
        return None

    async def on_conversation_list_chosen(self, message: ConversationList.Chosen) -> None:
        if message.conversation_id != self.conversation_id and not self.panel.busy():
            await self.open_conversation(message.conversation_id)
        self.hide_narrow_list()
        self.query_one(InputBox).focus()

    async def on_conversation_list_search_changed(self) -> None:
        await self.refresh_list()

    async def action_new_conversation(self) -> None:
        if not self.panel.busy():
            await self.open_conversation(None)
            self.query_one(InputBox).focus()

    def action_rename_conversation(self) -> None:
        if (chosen := self.target("rename")) is None:
            return

        async def rename(title: str | None) -> None:
            if title:
                with shown_errors(self):
                    self.store.rename_conversation(chosen.id, title)
                await self.refresh_list()

        self.push_screen(RenameScreen(chosen.title), rename)

    def action_answer_handoff(self) -> None:
        """The support team's answer to the open conversation's newest open hand-off."""
        if self.panel.busy():
            return
        cid, found = self.conversation_id, []
        with shown_errors(self):
            found = self.store.handoffs(unresolved=True, conversation_id=cid) if cid else []
        if not found:
            self.notify("No open hand-off in this conversation.", markup=False)
            return

        async def answer(reply: str | None) -> None:
            if reply:
                with shown_errors(self):
                    self.store.resolve_handoff(found[0].message_id, reply)
                    self.notify("Saved: the customer reads it in their conversation.")
                await self.open_conversation(cid)

        self.push_screen(PersonReplyScreen(found[0].question), answer)

    def action_delete_conversation(self) -> None:
        chosen = self.target("delete")
        if chosen is None or (chosen.id == self.conversation_id and self.panel.busy()):
            return

        async def delete(confirmed: bool | None) -> None:
            if not confirmed:
                return
            with shown_errors(self):
                self.store.delete_conversation(chosen.id)
                self.notify(f"Deleted “{chosen.title}”.", markup=False)
            if chosen.id == self.conversation_id:
                await self.open_conversation(None)
            else:
                await self.refresh_list()

        self.push_screen(ConfirmScreen(f"Delete “{chosen.title}” and all its messages?"), delete)

    def action_export_conversation(self) -> None:
        if (chosen := self.target("export")) is None:
            return

        def export(choice: ExportChoice | None) -> None:
            if choice is not None:
                with shown_errors(self):
                    path = write_export(
                        export_conversation(self.store, chosen.id, choice.fmt), choice.path
                    )
                    self.notify(f"Exported to {path}", title="Export", markup=False)

        self.push_screen(ExportScreen(chosen.title, chosen.id), export)

    def action_search(self) -> None:
        self.show_list().focus_search()

    def action_focus_list(self) -> None:
        self.show_list().focus_list()

    def action_focus_input(self) -> None:
        self.query_one(InputBox).focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(key_rows()))
