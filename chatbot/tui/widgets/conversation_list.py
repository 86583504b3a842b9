"""The sidebar: a search box over titles and message text, and the conversations, newest first."""

from dataclasses import dataclass

from textual import on
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.widgets import Input, Label, ListItem, ListView

from chatbot.store.records import Conversation

WAITING_MARK = "● "  # a hand-off in it waits for a person (F7 answers it)


class ConversationItem(ListItem):
    """One conversation in the list; keeps its id for the app."""

    def __init__(self, conversation: Conversation, waiting: bool = False) -> None:
        title = f"{WAITING_MARK if waiting else ''}{conversation.title}"
        super().__init__(Label(Content(title)), classes="waiting" if waiting else None)
        self.conversation_id = conversation.id


class ConversationList(Vertical):
    """Posts `Chosen` when the user opens a conversation and `SearchChanged` as they search."""

    BINDINGS = [
        Binding("delete", "app.delete_conversation", "Delete", show=False),
    ]

    @dataclass
    class Chosen(Message):
        conversation_id: int

    @dataclass
    class SearchChanged(Message):
        text: str

    def compose(self):
        yield Input(placeholder="Search conversations (Ctrl+F)", id="search")
        yield Label("", id="no-match", classes="hint")
        yield ListView(id="conversations")

    @property
    def search_text(self) -> str:
        return self.query_one("#search", Input).value

    async def show(
        self,
        conversations: list[Conversation],
        selected: int | None,
        waiting: frozenset[int] = frozenset(),
    ) -> None:
        """Replace the items; highlight the open conversation when it is listed, and mark
        those with a hand-off waiting for a person."""
        list_view = self.query_one("#conversations", ListView)
        await list_view.clear()
        await list_view.extend(ConversationItem(c, c.id in waiting) for c in conversations)
        ids = [c.id for c in conversations]
        list_view.index = ids.index(selected) if selected in ids else None
        searched = self.search_text.strip()
        none = Content(f"No conversation matches “{searched}”.") if searched and not ids else ""
        self.query_one("#no-match", Label).update(none)
        self.query_one("#no-match").display = bool(none)

    @on(ListView.Selected, "#conversations")
    def _chosen(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, ConversationItem):
            self.post_message(self.Chosen(event.item.conversation_id))

    @on(Input.Changed, "#search")
    def _search(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.SearchChanged(event.value))

    @on(Input.Submitted, "#search")
    def _open_first(self, event: Input.Submitted) -> None:
        """Enter in the search box opens the first conversation found (none: says so)."""
        event.stop()
        first = self.query(ConversationItem)
        if first:
            self.post_message(self.Chosen(first.first(ConversationItem).conversation_id))
        else:
            self.notify("No conversation matches; change the search.", markup=False)

    def focus_search(self) -> None:
        self.query_one("#search", Input).focus()

    def focus_list(self) -> None:
        self.query_one("#conversations", ListView).focus()

    @property
    def highlighted_id(self) -> int | None:
        """The conversation highlighted in the list while the list has focus, else None."""
        list_view = self.query_one("#conversations", ListView)
        item = list_view.highlighted_child
        if list_view.has_focus and isinstance(item, ConversationItem):
            return item.conversation_id
        return None
