"""Where the chatbot keeps its database; overridable for tests and scripts.

What the chatbot creates is its user's alone: folders 0700, files (databases, the log) 0600.
Conversations are private; other local users must not read them.
"""

import contextlib
import os
from pathlib import Path

from converter.paths import user_dir

DATA_ENV = "CHATBOT_DATA_DIR"


def data_dir() -> Path:
    """The data folder: $CHATBOT_DATA_DIR, else the user data folder."""
    return user_dir("data", DATA_ENV)


def default_db_path() -> Path:
    """The conversation database used when --db is not given."""
    return data_dir() / "chat.db"


def private_dir(path: Path) -> Path:
    """`path` as a folder, its missing parts created user-only (0700); an existing folder is
    left as its owner set it."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty and user-only (0600) unless it exists, before SQLite or logging
    open it: they keep the mode they find (SQLite gives its -wal and -shm files the
    database's), where creating it themselves would make it readable by everyone (0644)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return path
