"""Fixtures shared by every test: isolated data folders."""

import pytest


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path, monkeypatch):
    """Point the chatbot's data folder at a temp dir so no test touches the user's database."""
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"
