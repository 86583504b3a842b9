"""The app's preferences live in the config file beside the option defaults, written atomically."""

import pytest

from chatbot.cli.config import (
    AppPreferences,
    config_path,
    load_config,
    load_preferences,
    save_preferences,
)
from chatbot.errors import ChatbotError


def test_preferences_are_added_and_replaced_keeping_every_other_line():
    path = config_path()
    path.write_text('# my settings\nthreads = 2\nmodel = "~/m.gguf"\n')
    save_preferences(AppPreferences(theme="nord"))
    assert load_preferences() == AppPreferences(theme="nord")
    save_preferences(AppPreferences(theme='gruvbox "dark"', conversation_list=False))
    text = path.read_text()
    assert text.startswith('# my settings\nthreads = 2\nmodel = "~/m.gguf"\n')
    assert text.count("theme =") == 1
    assert load_preferences() == AppPreferences(theme='gruvbox "dark"', conversation_list=False)
    assert set(load_config()) == {"threads", "model"}, "preferences are not option defaults"
    assert path.stat().st_mode & 0o777 == 0o600


def test_no_file_means_no_preferences_and_saving_creates_it():
    assert load_preferences() == AppPreferences()
    save_preferences(AppPreferences(conversation_list=True))
    assert config_path().read_text() == "conversation_list = true\n"


def test_a_wrong_type_is_one_clear_error():
    config_path().write_text("conversation_list = 3\n")
    with pytest.raises(ChatbotError, match="conversation_list must be true or false"):
        load_preferences()
