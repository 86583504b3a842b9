"""The Textual chat app: bindings, composition, and what spans widgets (model, conversations).

The UI never touches llama.cpp or SQL directly: the `ChatPanel` runs each turn through a
`Session`, and the `Store` lists and edits conversations. The model loads in a thread worker
at startup, so the window is live at once and a loading error is a notification, not a crash.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Footer

from chatbot.conversation.export import export_conversation
from chatbot.engines.base import Engine, GenerationOptions
from chatbot.errors import ChatbotError
from chatbot.store.records import Conversation
from chatbot.store.store import Store
from chatbot.tui.screens.confirm import ConfirmScreen
from chatbot.tui.screens.export import ExportChoice, ExportScreen, write_export
from chatbot.tui.screens.help import HelpScreen
from chatbot.tui.screens.rename import RenameScreen
from chatbot.tui.widgets.chat_panel import ChatPanel
from chatbot.tui.widgets.conversation_list import ConversationList
from chatbot.tui.widgets.feedback import shown_errors
from chatbot.tui.widgets.input_box import InputBox
from chatbot.tui.widgets.message_view import ReplyEnded
from chatbot.tui.widgets.status_line import StatusLine

if TYPE_CHECKING:
    from chatbot.faq.knowledge_base import KnowledgeBase

log = logging.getLogger("chatbot.tui.app")
NEW = "Start a new conversation"
RENAME = "Rename the conversation (highlighted in the list, else the open one)"
DELETE = "Delete the conversation (highlighted in the list, else the open one)"
EXPORT = "Export the conversation to a Markdown or JSON file"
CLOSE_WAIT_S = 30.0  # on quit, how long a reply may take to stop (one token, or a prompt eval)


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
    # Priority: an action runs before the keys typed after it reach the editor, so Ctrl+N
    # followed at once by a message sends it to the new conversation. Esc stays non-priority
    # so that dialogs get it first.
    BINDINGS = [
        Binding("f1", "help", "Help", priority=True, tooltip="Show every key"),
        Binding("escape", "stop_reply", "Stop", tooltip="Stop the reply, keeping its text"),
        Binding("ctrl+n", "new_conversation", "New", priority=True, tooltip=NEW),
        Binding("f2", "rename_conversation", "Rename", priority=True, tooltip=RENAME),
        Binding("f8", "delete_conversation", "Delete", priority=True, tooltip=DELETE),
        Binding("ctrl+s", "export_conversation", "Export", priority=True, tooltip=EXPORT),
        Binding("ctrl+f", "search", "Search conversations", show=False, priority=True),
        Binding("ctrl+l", "focus_list", "Go to the conversation list", show=False, priority=True),
        Binding("ctrl+o", "focus_input", "Go to the message editor", show=False, priority=True),
        Binding("ctrl+q", "quit", "Quit", priority=True, tooltip="Quit"),
    ]

    def __init__(
        self,
        engine_factory: Callable[[], Engine],
        store: Store,
        *,
        system_prompt: str | None = None,
        knowledge_base: "KnowledgeBase | None" = None,
        options: GenerationOptions | None = None,
    ) -> None:
        super().__init__()
        self._engine_factory = engine_factory
        self.store = store
        policy = None
        if knowledge_base is not None:
            # Imported here: a knowledge base given means the FAQ modules are loaded already,
            # and plain chat then never loads them.
            from chatbot.faq.policy import FaqPolicy

            policy = FaqPolicy(knowledge_base)
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
        yield Footer()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """While a dialog is open, only quitting reaches the app; other keys are the dialog's."""
        return action == "quit" or not isinstance(self.screen, ModalScreen)

    @property
    def engine(self) -> Engine | None:
        return self.panel.engine

    @property
    def conversation_id(self) -> int | None:
        return self.panel.conversation_id

    async def on_mount(self) -> None:
        self.load_engine()
        conversations = []
        with shown_errors(self):
            conversations = self.store.list_conversations()
        await self.open_conversation(conversations[0].id if conversations else None)
        for warning in self.knowledge_base.warnings[:5] if self.knowledge_base else []:
            self.notify(warning, title="FAQ", severity="warning", markup=False)
        self.query_one(InputBox).focus()

    async def on_unmount(self) -> None:
        """Let a running reply stop and save its partial text, then free the model."""
        if not self.panel.stop(wait_s=CLOSE_WAIT_S):
            log.warning("the reply did not stop within %s s of closing", CLOSE_WAIT_S)
        if self.engine is not None:
            self.engine.close()

    # Model

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
        self.panel.engine = message.engine
        status = self.query_one(StatusLine)
        status.set_engine(message.engine.info)
        status.set_state("Ready")

    def on_engine_failed(self, message: EngineFailed) -> None:
        self.panel.engine_error = message.error
        self.query_one(StatusLine).set_state("No model")
        self.notify(message.error, title="Model", severity="error", timeout=30, markup=False)

    # Replies

    def on_input_box_submitted(self) -> None:
        if self.panel.replying:
            self.query_one(StatusLine).set_state("Writing…")

    async def on_reply_ended(self, message: ReplyEnded) -> None:
        status = self.query_one(StatusLine)
        status.set_state("Ready")
        if message.result is not None and message.result.stats is not None:
            status.set_reply(message.result.stats)
        await self.refresh_list()

    def action_stop_reply(self) -> None:
        """Esc: stop the reply; the session saves the partial text, marked as stopped."""
        if self.panel.replying:
            self.panel.stop()
            self.query_one(StatusLine).set_state("Stopping…")

    # Conversations

    async def open_conversation(self, conversation_id: int | None) -> None:
        """Show a saved conversation (None: a new, empty one) and its last reply's numbers."""
        turns = []
        with shown_errors(self):
            turns = self.store.turns(conversation_id) if conversation_id is not None else []
        await self.panel.open(conversation_id)
        self.query_one(StatusLine).set_reply(turns[-1] if turns else None)
        await self.refresh_list()

    async def refresh_list(self) -> None:
        sidebar = self.query_one(ConversationList)
        with shown_errors(self):
            found = self.store.list_conversations(search=sidebar.search_text or None)
            await sidebar.show(found, self.conversation_id)

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
        self.query_one(ConversationList).focus_search()

    def action_focus_list(self) -> None:
        self.query_one(ConversationList).focus_list()

    def action_focus_input(self) -> None:
        self.query_one(InputBox).focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.BINDINGS))
