"""Streaming, atomic GGUF writing.

Tensor infos (names, shapes, types) go into the header first; then each tensor is loaded,
converted and written on its own, so peak memory stays near one tensor rather than the model.
The file is written through converter.files.atomic_output: an error, Ctrl-C or a kill never
leaves a half-written file at the output, nor a temporary file for long.
"""

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import gguf
import numpy as np
from tqdm import tqdm

from converter.errors import OutputError
from converter.files import atomic_output

if TYPE_CHECKING:
    import torch

# Output types the converter writes itself; everything else goes through llama.cpp's quantizer.
FLOAT_TYPES: dict[str, gguf.GGMLQuantizationType] = {
    "F32": gguf.GGMLQuantizationType.F32,
    "F16": gguf.GGMLQuantizationType.F16,
    "BF16": gguf.GGMLQuantizationType.BF16,
}
_ITEM_BYTES = {"F32": 4, "F16": 2, "BF16": 2}


@dataclass(frozen=True)
class TensorSpec:
    """One GGUF tensor: its name, its shape (HF order: rows first) and how to load its data."""

    name: str
    shape: tuple[int, ...]
    load: Callable[[], "torch.Tensor"]


def tensor_type(spec: TensorSpec, float_type: str) -> str:
    """Norms, biases and other 1-D tensors stay F32 (llama.cpp expects them so); matrices
    take the requested float type."""
    return "F32" if len(spec.shape) == 1 else float_type


def write_gguf(
    dest: Path,
    arch: str,
    add_metadata: Callable[[gguf.GGUFWriter], None],
    tensors: Sequence[TensorSpec],
    float_type: str,
    *,
    show_progress: bool = False,
    atomic: bool = True,
) -> dict[str, str]:
    """Write a complete GGUF (atomically unless `dest` is already a temp path the caller
    cleans up); returns each tensor's written type by name."""
    types = {spec.name: tensor_type(spec, float_type) for spec in tensors}
    with atomic_output(dest) if atomic else contextlib.nullcontext(dest) as path:
        writer = gguf.GGUFWriter(path, arch)
        add_metadata(writer)
        for spec in tensors:
            _add_info(writer, spec, types[spec.name])
        try:
            _write_file(writer, tensors, types, show_progress)
        finally:
            writer.close()
    return types


def _add_info(writer: gguf.GGUFWriter, spec: TensorSpec, type_name: str) -> None:
    ggml_type = FLOAT_TYPES[type_name]
    n_bytes = int(np.prod(spec.shape, dtype=np.int64)) * _ITEM_BYTES[type_name]
    writer.add_tensor_info(spec.name, spec.shape, _numpy_dtype(type_name), n_bytes, ggml_type)


def _write_file(
    writer: gguf.GGUFWriter,
    tensors: Sequence[TensorSpec],
    types: dict[str, str],
    show_progress: bool,
) -> None:
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for spec in tqdm(tensors, desc="Writing tensors", unit="tensor", disable=not show_progress):
            writer.write_tensor_data(_to_numpy(spec, types[spec.name]))
    except OSError as exc:
        raise OutputError(f"cannot write {writer.path}: {exc.strerror or exc}") from exc


def _numpy_dtype(type_name: str) -> np.dtype:
    # BF16 travels as raw uint16 words; the writer takes the GGML type from raw_dtype.
    return {"F32": np.dtype(np.float32), "F16": np.dtype(np.float16)}.get(
        type_name, np.dtype(np.uint16)
    )


def _to_numpy(spec: TensorSpec, type_name: str) -> np.ndarray:
    """Load one tensor, check its shape against the header, convert to the written type."""
    import torch  # here, so the CLI answers --help and input errors without loading torch

    tensor = spec.load()
    if tuple(tensor.shape) != spec.shape:
        raise ValueError(f"{spec.name}: loaded shape {tuple(tensor.shape)} != planned {spec.shape}")
    dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[type_name]
    tensor = tensor.detach().to("cpu", dtype).contiguous()
    if type_name == "BF16":
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()
