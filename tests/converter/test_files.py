"""converter.files: atomic writes, and temp files a killed process left, found by any later run.

The killed processes are real: a child Python process writes through the helper and SIGKILLs
itself mid-write, so no cleanup code of its own can run.
"""

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from converter.files import (
    TEMP_SUFFIX,
    atomic_output,
    atomic_write_bytes,
    atomic_write_text,
    ledger_dir,
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """A ledger of this test's own, so other runs on the machine do not show up in it."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("CHATBOT_CACHE_DIR", str(folder))
    return folder


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_write_bytes_is_user_only_and_leaves_nothing_else(tmp_path):
    dest = tmp_path / "out" / "export.md"
    dest.parent.mkdir()
    atomic_write_bytes(dest, b"caf\xc3\xa9")
    atomic_write_text(dest.with_name("notes.txt"), "café", mode=0o640)
    assert dest.read_bytes() == "café".encode()
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert stat.S_IMODE(dest.with_name("notes.txt").stat().st_mode) == 0o640
    assert sorted(p.name for p in dest.parent.iterdir()) == ["export.md", "notes.txt"]
    assert list(ledger_dir().iterdir()) == []


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    dest = tmp_path / "model.gguf"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(dest) as temp:
        temp.write_bytes(b"half")
        raise RuntimeError("disk on fire")
    assert dest.read_bytes() == b"old"
    assert hidden(tmp_path) == []
    assert list(ledger_dir().iterdir()) == []


def test_mode_applies_to_a_file_the_writer_opens_itself(tmp_path):
    dest = tmp_path / "history.db"
    with atomic_output(dest, mode=0o600) as temp, temp.open("wb") as handle:  # as a library does
        handle.write(b"x")
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from converter.files import atomic_output, temporary_dir

kind, target = sys.argv[1], Path(sys.argv[2])
if kind == "file":
    with atomic_output(target) as temp:
        temp.write_bytes(b"x" * 1000)
        os.kill(os.getpid(), signal.SIGKILL)
else:
    with temporary_dir(target.parent, target.name) as folder:
        (folder / "model.safetensors").write_bytes(b"x" * 1000)
        os.kill(os.getpid(), signal.SIGKILL)
"""


def run_killed_writer(kind: str, target: Path) -> None:
    code = textwrap.dedent(KILLED_WRITER)
    done = subprocess.run([sys.executable, "-c", code, kind, str(target)], timeout=60)
    assert done.returncode == -signal.SIGKILL


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_what_a_killed_process_left_is_removed_by_any_later_write(kind, tmp_path):
    first, other = tmp_path / "first", tmp_path / "elsewhere"
    first.mkdir()
    other.mkdir()
    run_killed_writer(kind, first / "model.gguf")
    left = hidden(first)
    assert len(left) == 1 and left[0].endswith(TEMP_SUFFIX)  # the kill left it behind
    assert len(list(ledger_dir().iterdir())) == 1
    atomic_write_text(other / "unrelated.txt", "a later run, another output")
    assert hidden(first) == []
    assert list(ledger_dir().iterdir()) == []


def test_a_living_process_keeps_its_temp_files(tmp_path):
    with atomic_output(tmp_path / "mine.gguf") as temp:
        temp.write_bytes(b"in progress")
        child = subprocess.run(
            [sys.executable, "-c", "from converter.files import sweep_ledger; sweep_ledger()"],
            env={**os.environ},
            timeout=60,
        )
        assert child.returncode == 0
        assert temp.exists()


def test_the_ledger_only_ever_deletes_its_own_temp_names(tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    ledger_dir().mkdir(parents=True)
    (ledger_dir() / "999999999-forged.json").write_text(f'{{"path": "{precious}"}}')
    atomic_write_text(tmp_path / "x.txt", "x")
    assert precious.read_text() == "keep me"
    assert list(ledger_dir().iterdir()) == []
