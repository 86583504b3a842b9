"""converter.llama_log: llama.cpp's log as whole lines, to logging and listeners, never printed."""

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import llama_cpp
import pytest

from converter import llama_log
from tests.tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("log") / "tiny.gguf")


@pytest.fixture(scope="module")
def truncated(tiny) -> Path:
    path = tiny.with_name("truncated.gguf")
    path.write_bytes(tiny.read_bytes()[: tiny.stat().st_size // 2])
    return path


def load(path: Path) -> bool:
    """Load with llama.cpp's own API (no llama-cpp-python prints); True when it loaded."""
    params = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if model:
        llama_cpp.llama_model_free(model)
    return bool(model)


def test_listeners_get_whole_lines_and_logging_gets_them_too(tiny, caplog):
    lines: list[tuple[int, str]] = []
    with (
        caplog.at_level(logging.DEBUG, logger="llama.cpp"),
        llama_log.listen(lambda level, line: lines.append((level, line))),
    ):
        assert load(tiny)
    texts = [line for _, line in lines]
    assert any(line.startswith("llama_model_loader: ") for line in texts)
    assert all("\n" not in line and line.strip() for line in texts)
    assert [r.getMessage() for r in caplog.records if r.name == "llama.cpp"] == texts
    after = len(lines)
    assert load(tiny)
    assert len(lines) == after  # the listener is gone once its block ends


def test_error_lines_explain_a_failed_load(truncated):
    errors = llama_log.ErrorLines()
    with llama_log.listen(errors):
        assert not load(truncated)
    assert errors and errors.first == errors[0]
    assert any("truncated" in line or "failed" in line for line in errors), errors


def test_nothing_reaches_the_terminal_without_a_logging_setup(truncated):
    """No handler configured (the converter CLI): warnings and errors are dropped, not printed
    by Python's last-resort handler, nor by llama-cpp-python's own callback."""
    code = textwrap.dedent(
        """
        import sys
        import llama_cpp
        from converter import llama_log
        llama_log.install()
        params = llama_cpp.llama_model_default_params()
        assert not llama_cpp.llama_model_load_from_file(sys.argv[1].encode(), params)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(truncated)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout == ""
