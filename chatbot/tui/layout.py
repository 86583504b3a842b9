"""What the app remembers between runs and how it fits the screen: the theme, and the
conversation list shown or hidden (a narrow screen hides it until Ctrl+B shows it) and kept
up to date with the store.

Customers of `chatbot serve` write to the same store as the app: every LIST_CHECK_S the list
and the open conversation look again, so the support team sees new conversations, hand-offs (●)
and customers' messages as they come.
"""

import asyncio
import contextlib
from dataclasses import replace
from functools import cached_property

from textual.app import App
from textual.css.query import NoMatches
from textual.theme import Theme

from chatbot.cli.config import AppPreferences, load_preferences, save_preferences
from chatbot.tui.widgets.conversation_list import ConversationList
from chatbot.tui.widgets.feedback import shown_errors
from chatbot.tui.widgets.input_box import InputBox

LIST_CHECK_S = 10.0
# Screen classes by width: below 80 columns the list hides; from 120 it is wider (app.tcss).
BREAKPOINTS = [(0, "-narrow"), (80, "-normal"), (120, "-wide")]


class ListAndTheme(App):
    """The chat app's preferences (config file) and its conversation list (the app gives
    `store` and `conversation_id`)."""

    preferences = AppPreferences()
    _listed: tuple = ()  # what the list shows: conversations, and those waiting for a person
    _listed_version: tuple = ()  # the store's version when the list was last read

    @cached_property
    def _list_lock(self) -> asyncio.Lock:
        return asyncio.Lock()

    async def check_store(self) -> None:
        """The timer's look: the list, and the open conversation, as the store has them."""
        with contextlib.suppress(NoMatches):  # a tick as the app closes: its widgets are gone
            await self.refresh_list(only_if_changed=True)
            await self.panel.catch_up()  # type: ignore[attr-defined]

    async def refresh_list(self, only_if_changed: bool = False) -> None:
        """The list as the store has it, the open conversation highlighted; `only_if_changed`
        (the timer) leaves an unchanged list alone and keeps the user's highlight."""
        async with self._list_lock:  # the timer's look and an action's never interleave
            await self._refresh_list(only_if_changed)

    async def _refresh_list(self, only_if_changed: bool) -> None:
        sidebar = self.query_one(ConversationList)
        with shown_errors(self):
            store = self.store  # type: ignore[attr-defined]
            version = store.version()
            if only_if_changed and version == self._listed_version:
                return  # nothing committed since the last read: the list is as shown
            self._listed_version = version
            listed = (
                store.list_conversations(search=sidebar.search_text or None),
                store.waiting_conversations(),
            )
            if only_if_changed and listed == self._listed:
                return
            self._listed = listed
            kept = sidebar.highlighted_id if only_if_changed else None
            await sidebar.show(listed[0], kept or self.conversation_id, listed[1])  # type: ignore[attr-defined]

    def apply_preferences(self) -> None:
        """The theme and list the user chose last time; a theme chosen later is saved."""
        with shown_errors(self):
            self.preferences = load_preferences()
        if self.preferences.theme in self.available_themes:
            self.theme = self.preferences.theme
        if self.preferences.conversation_list is not None:
            hidden = not self.preferences.conversation_list
            self.query_one(ConversationList).set_class(hidden, "-hidden")
        self.theme_changed_signal.subscribe(self, self._theme_changed)

    def _theme_changed(self, theme: Theme) -> None:
        self.save_preferences(replace(self.preferences, theme=theme.name))

    def save_preferences(self, preferences: AppPreferences) -> None:
        if preferences != self.preferences:
            self.preferences = preferences
            with shown_errors(self):
                save_preferences(preferences)

    def action_toggle_list(self) -> None:
        """Show or hide the list: on a narrow screen until a conversation is chosen, on a
        wider one for good (kept in the config file)."""
        sidebar = self.query_one(ConversationList)
        if self.screen.has_class("-narrow"):
            sidebar.set_class(not sidebar.display, "-shown")
        else:
            sidebar.set_class(sidebar.display, "-hidden")
            self.save_preferences(replace(self.preferences, conversation_list=sidebar.display))
        if sidebar.display:
            sidebar.focus_list()
        else:
            self.query_one(InputBox).focus()

    def show_list(self) -> ConversationList:
        """The list, shown if it was hidden (Ctrl+L, Ctrl+F)."""
        sidebar = self.query_one(ConversationList)
        if not sidebar.display:
            sidebar.add_class("-shown")
            sidebar.remove_class("-hidden")
        return sidebar

    def hide_narrow_list(self) -> None:
        """On a narrow screen the list goes once a conversation is chosen."""
        self.query_one(ConversationList).remove_class("-shown")
