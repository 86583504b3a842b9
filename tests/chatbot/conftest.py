"""Model files for the chatbot tests: a tiny GGUF built here (fast) and the real SmolLM2 (slow)."""

from pathlib import Path

import pytest

from tests.chatbot.tiny_gguf import build_tiny_chat_gguf


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    """A tiny random-weight chat GGUF that llama.cpp loads in milliseconds."""
    return build_tiny_chat_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny-chat.gguf")


@pytest.fixture(scope="session")
def real_gguf(smollm2_gguf) -> Path:
    """SmolLM2-135M-Instruct Q4_K_M, converted by the project's converter (cached on disk)."""
    return smollm2_gguf("Q4_K_M")
