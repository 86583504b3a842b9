"""Where the chatbot keeps its database; overridable for tests and scripts."""

import os
from pathlib import Path

import platformdirs

from converter.paths import APP_NAME  # one name for the data and the model cache folders

DATA_ENV = "CHATBOT_DATA_DIR"


def data_dir() -> Path:
    """The data folder: $CHATBOT_DATA_DIR, else the user data folder."""
    override = os.environ.get(DATA_ENV)
    return Path(override) if override else Path(platformdirs.user_data_dir(APP_NAME))


def default_db_path() -> Path:
    """The conversation database used when --db is not given."""
    return data_dir() / "chat.db"
