"""A checkpoint's config and tensors, read one tensor at a time.

Safetensors files are memory-mapped, so a tensor costs memory only while it is being converted.
Pickle weights (`pytorch_model*.bin`) can run code when loaded: they are refused unless the user
allows them, and even then read with `torch.load(weights_only=True)`.
"""

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from converter.errors import SourceError
from converter.source import check_checkpoint_folder

SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_INDEX = "pytorch_model.bin.index.json"


@dataclass(frozen=True)
class TensorInfo:
    """Shape and dtype of one stored tensor, known without loading its data."""

    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass
class Checkpoint:
    """Config plus lazily loaded tensors; `tokenizer_dir` holds the tokenizer files."""

    config: dict[str, Any]
    tokenizer_dir: Path
    infos: dict[str, TensorInfo]
    loader: Callable[[str], torch.Tensor] = field(repr=False)
    weight_files: list[Path] = field(default_factory=list)

    @classmethod
    def open(cls, path: Path, *, allow_pickle: bool = False) -> "Checkpoint":
        """Read config.json and index the weights of a checkpoint folder; load nothing yet."""
        check_checkpoint_folder(path)
        config = read_config(path)
        safetensors_files = _safetensors_files(path)
        if safetensors_files:
            infos, loader = _index_safetensors(safetensors_files)
            return cls(config, path, infos, loader, safetensors_files)
        pickle_files = _pickle_files(path)
        if not pickle_files:
            raise SourceError(f"{path} has no weights: no *.safetensors and no pytorch_model.bin")
        if not allow_pickle:
            names = ", ".join(p.name for p in pickle_files[:3])
            raise SourceError(
                f"{path} holds only pickle weights ({names}), which can run code when loaded; "
                "convert them to safetensors, or pass --allow-pickle to load them with "
                "torch.load(weights_only=True)"
            )
        state_dict = _load_pickles(pickle_files)
        return cls.from_state_dict(config, state_dict, path, weight_files=pickle_files)

    @classmethod
    def from_state_dict(
        cls,
        config: Mapping[str, Any],
        state_dict: Mapping[str, torch.Tensor],
        tokenizer_dir: Path,
        *,
        weight_files: list[Path] | None = None,
    ) -> "Checkpoint":
        """An in-memory model (for example a pruned one) in the same shape as a folder."""
        tensors = {name: t.detach() for name, t in state_dict.items()}
        infos = {name: TensorInfo(tuple(t.shape), t.dtype) for name, t in tensors.items()}
        return cls(
            dict(config), Path(tokenizer_dir), infos, tensors.__getitem__, weight_files or []
        )

    @property
    def architecture(self) -> str:
        """The HF class name that picks the converter's architecture writer."""
        names = self.config.get("architectures") or []
        if not names or not isinstance(names[0], str):
            raise SourceError("config.json has no 'architectures' entry naming the model class")
        return names[0]

    def names(self) -> list[str]:
        """Tensor names in stored order."""
        return list(self.infos)

    def __contains__(self, name: str) -> bool:
        return name in self.infos

    def load(self, name: str) -> torch.Tensor:
        """One tensor's data; a damaged file becomes a SourceError."""
        try:
            return self.loader(name)
        except Exception as exc:  # noqa: BLE001 - safetensors/torch raise many kinds
            raise SourceError(f"cannot read tensor {name}: {exc}") from exc

    def items(self) -> Iterator[tuple[str, TensorInfo]]:
        return iter(self.infos.items())

    def weight_bytes(self) -> int:
        """Bytes of the weight files on disk (0 for an in-memory checkpoint)."""
        return sum(p.stat().st_size for p in self.weight_files if p.exists())


def read_config(path: Path) -> dict[str, Any]:
    """config.json as a dict."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read {path / 'config.json'}: {exc}") from exc
    if not isinstance(config, dict):
        raise SourceError(f"{path / 'config.json'} is not a JSON object")
    return config


def _safetensors_files(path: Path) -> list[Path]:
    index = path / SAFETENSORS_INDEX
    if index.is_file():
        return _indexed_files(path, index)
    return sorted(path.glob("*.safetensors"))


def _pickle_files(path: Path) -> list[Path]:
    index = path / PICKLE_INDEX
    if index.is_file():
        return _indexed_files(path, index)
    return sorted(path.glob("pytorch_model*.bin"))


def _indexed_files(path: Path, index: Path) -> list[Path]:
    """The shards a sharded checkpoint's index names; each must be present."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"cannot read the shard index {index}: {exc}") from exc
    files = [path / name for name in dict.fromkeys(weight_map.values())]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise SourceError(f"{path} is missing shards named in {index.name}: {', '.join(missing)}")
    return files


def _index_safetensors(
    files: list[Path],
) -> tuple[dict[str, TensorInfo], Callable[[str], torch.Tensor]]:
    """Open every shard memory-mapped, check each header against the file size."""
    from safetensors import safe_open

    infos: dict[str, TensorInfo] = {}
    handles: dict[str, Any] = {}
    for file in files:
        try:
            handle = safe_open(str(file), framework="pt")
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a Mapping
                part = handle.get_slice(name)
                infos[name] = TensorInfo(tuple(part.get_shape()), _dtype(part.get_dtype()))
                handles[name] = handle
        except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ValueError
            raise SourceError(
                f"{file.name} is not a readable safetensors file ({_first_line(exc)}); "
                "it may be truncated or corrupt: download or save it again"
            ) from exc
    return infos, lambda name: handles[name].get_tensor(name)


_SAFETENSORS_DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _dtype(name: str) -> torch.dtype:
    if name not in _SAFETENSORS_DTYPES:
        raise SourceError(f"unsupported safetensors dtype {name}")
    return _SAFETENSORS_DTYPES[name]


def _load_pickles(files: list[Path]) -> dict[str, torch.Tensor]:
    """torch.load with weights_only=True: plain tensors only, no code from the file."""
    state_dict: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            part = _torch_load(file)
        except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError, OSError
            raise SourceError(
                f"cannot load {file.name} with weights_only=True ({_first_line(exc)}); "
                "it may be damaged or hold more than tensors: convert it to safetensors"
            ) from exc
        if not isinstance(part, Mapping):
            raise SourceError(f"{file.name} does not hold a state dict of tensors")
        state_dict.update(part)
    return state_dict


def _torch_load(file: Path) -> Any:
    """Memory-mapped when the file is in the zip format, else read whole (old format)."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
        return torch.load(file, map_location="cpu", weights_only=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
