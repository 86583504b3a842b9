"""Shared fixtures: a tiny GGUF built here (fast), the real SmolLM2 (slow), a temp chat DB."""

from pathlib import Path

import pytest

from chatbot.store.store import Store
from tests.chatbot.tiny_gguf import build_tiny_chat_gguf


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    """A tiny random-weight chat GGUF that llama.cpp loads in milliseconds."""
    return build_tiny_chat_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny-chat.gguf")


@pytest.fixture(scope="session")
def real_gguf(smollm2_gguf) -> Path:
    """SmolLM2-135M-Instruct Q4_K_M, converted by the project's converter (cached on disk)."""
    return smollm2_gguf("Q4_K_M")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "chat.db"


@pytest.fixture
def store(db_path: Path):
    s = Store(db_path)
    yield s
    s.close()
