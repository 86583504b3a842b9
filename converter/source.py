"""Turn the user's SOURCE argument into a local checkpoint folder, or say clearly why not."""

import re
from dataclasses import dataclass
from pathlib import Path

from converter.errors import SourceError

# owner/name as the Hugging Face hub spells repository ids.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Only what a conversion reads: never pickles unless the user asked for them later.
_HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja", "*.txt"]


@dataclass(frozen=True)
class Source:
    """A checkpoint folder on disk and how the user named it."""

    path: Path
    spec: str


def resolve_source(spec: str | Path) -> Source:
    """A local folder as is; an `owner/name` hub id through huggingface_hub when reachable."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SourceError(f"source {text} is a file; give the checkpoint folder that holds it")
        return Source(path=path.resolve(), spec=text)
    if _HUB_ID.match(text) and not text.startswith("."):
        return Source(path=_download(text), spec=text)
    raise SourceError(
        f"source {text} not found: no such folder, and it is not a hub id like owner/name"
    )


def _download(repo_id: str) -> Path:
    """Fetch a hub snapshot (config, safetensors, tokenizer), from the local HF cache first."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise SourceError("huggingface_hub is not installed; pass a local folder") from exc
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: try the network next
        pass
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS))
    except Exception as exc:  # noqa: BLE001 - every failure means the same to the user
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SourceError(
            f"{repo_id} is not a local folder, and downloading it from the Hugging Face hub "
            f"failed ({reason[:160]}); check the path, the id and the network"
        ) from exc


def check_checkpoint_folder(path: Path) -> None:
    """A Hugging Face checkpoint folder has a config.json; say so before anything else."""
    if not (path / "config.json").is_file():
        raise SourceError(
            f"{path} has no config.json: not a Hugging Face checkpoint folder "
            "(save the model with save_pretrained, or point at the folder that holds config.json)"
        )
