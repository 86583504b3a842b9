"""The project's one way to write a file: atomically, and no temporary file left behind.

A file is written under a hidden name beside its destination (`.NAME.PID-RAND.partial`) and
renamed into place only when complete, so a reader never sees half a file. An error or Ctrl-C
deletes the temporary file on the way out; a kill cannot run any code, so every temporary path
is first recorded in a ledger, one small file per path in `cache_dir()/partials/`, named after
the process that owns it. Every atomic write and temporary folder starts by sweeping that
ledger: whatever a dead process left, for whatever output name and in whatever folder, goes.
Light on purpose (standard library only at import): the chatbot writes its files through it.
"""

import contextlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from converter.paths import cache_dir

TEMP_SUFFIX = ".partial"
LEDGER_FOLDER = "partials"

log = logging.getLogger(__name__)


def temp_path_for(dest: Path, tag: str = "") -> Path:
    """A hidden sibling of `dest`, unique to this process, that a rename can move into place."""
    return dest.with_name(f".{dest.name}{tag}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")


@contextlib.contextmanager
def atomic_output(dest: Path, tag: str = "", *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temp path to write; rename it to `dest` on success, delete it on any failure.

    With `mode` the temp file is created with exactly those permissions before it is yielded
    (a writer that opens it with "wb" keeps them); without, the writer creates it as usual.
    """
    dest = Path(dest)
    remove_stale_temps(dest)
    with temporary_path(dest, tag) as temp:
        if mode is not None:
            os.close(_create(temp, mode))
        yield temp
        os.replace(temp, dest)


def atomic_write_bytes(dest: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `dest` atomically, flushed to disk, readable by the user only by default."""
    with atomic_output(Path(dest)) as temp:
        fd = _create(temp, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_text(dest: Path, text: str, mode: int = 0o600) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(dest, text.encode("utf-8"), mode)


@contextlib.contextmanager
def temporary_path(dest: Path, tag: str = "") -> Iterator[Path]:
    """A hidden temp path beside `dest`, in the ledger, deleted on exit whatever happens."""
    sweep_ledger()
    temp = temp_path_for(Path(dest), tag)
    entry = _record(temp)
    try:
        yield temp
    finally:
        temp.unlink(missing_ok=True)
        _forget(entry)


@contextlib.contextmanager
def temporary_dir(parent: Path, name: str) -> Iterator[Path]:
    """A private (0700) hidden folder in `parent`, in the ledger, removed on exit if still there
    (a caller may rename it into place)."""
    sweep_ledger()
    folder = temp_path_for(Path(parent) / name)
    entry = _record(folder)
    try:
        folder.mkdir(mode=0o700)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        _forget(entry)


def remove_stale_temps(dest: Path) -> None:
    """Delete temp files a dead run left beside `dest` (also those written before the ledger)."""
    for temp in dest.parent.glob(f".{dest.name}*{TEMP_SUFFIX}"):
        pid_part = temp.name.removesuffix(TEMP_SUFFIX).rsplit(".", 1)[-1].split("-")[0]
        if pid_part.isdigit() and not _alive(int(pid_part), None) and temp.is_file():
            temp.unlink(missing_ok=True)


def ledger_dir() -> Path:
    return cache_dir() / LEDGER_FOLDER


def sweep_ledger() -> None:
    """Remove every temp file or folder whose process is gone, then its ledger entry."""
    folder = ledger_dir()
    try:
        entries = list(folder.iterdir())
    except OSError:
        return  # no ledger yet, or none possible: nothing recorded to clean
    for entry in entries:
        pid_part = entry.name.split("-", 1)[0]
        if not pid_part.isdigit() or int(pid_part) == os.getpid():
            continue
        owner = _read_entry(entry)
        if _alive(int(pid_part), owner.get("started")):
            continue
        path = owner.get("path")
        if isinstance(path, str):
            _remove_temp(Path(path))
        entry.unlink(missing_ok=True)


def _record(path: Path) -> Path | None:
    """Write the ledger entry for `path` before `path` exists; None when there is no ledger
    (an unwritable cache must not stop a conversion: beside-the-output cleanup remains)."""
    folder = ledger_dir()
    entry = folder / f"{os.getpid()}-{secrets.token_hex(6)}.json"
    owner = {"pid": os.getpid(), "started": _start_time(os.getpid()), "path": str(path.absolute())}
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = _create(entry, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(owner, handle)
    except OSError as exc:
        log.debug("no ledger entry for %s: %s", path, exc)
        return None
    return entry


def _forget(entry: Path | None) -> None:
    if entry is not None:
        entry.unlink(missing_ok=True)


def _read_entry(entry: Path) -> dict:
    """The entry's owner and path; {} for one cut short by a kill (then only the pid counts)."""
    try:
        owner = json.loads(entry.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _remove_temp(path: Path) -> None:
    """Only this module's own temp names are ever deleted, whatever an entry says."""
    if not (path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX)):
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _create(path: Path, mode: int) -> int:
    """A new file with exactly `mode` (not widened or narrowed by the umask); its descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.fchmod(fd, mode)
    return fd


def _start_time(pid: int) -> float | None:
    import psutil  # here: only when a ledger entry is written or checked

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _alive(pid: int, started: float | None) -> bool:
    """Whether `pid` still runs and, when its start time is known, is the same process (a pid
    may be reused); a zombie has finished."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(process.create_time() - started) < 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # someone else's process: not ours to judge
