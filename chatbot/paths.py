"""Where the chatbot keeps its database; overridable for tests and scripts."""

from pathlib import Path

from converter.paths import user_dir

DATA_ENV = "CHATBOT_DATA_DIR"


def data_dir() -> Path:
    """The data folder: $CHATBOT_DATA_DIR, else the user data folder."""
    return user_dir("data", DATA_ENV)


def default_db_path() -> Path:
    """The conversation database used when --db is not given."""
    return data_dir() / "chat.db"
