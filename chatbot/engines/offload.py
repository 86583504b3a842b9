"""GPU offload settings in effect for the embedded engine: the GGUF's plan, then config and flags.

The converter stores a plan (`converter plan`, or `--gpu-memory` while converting) under the
keys below; the flags `--gpu-layers N` and `--flash-attn/--no-flash-attn` (or the config file)
override it. On a llama.cpp build without GPU support nothing is offloaded and the status line
says so. The header is scanned with the standard library: gguf.GGUFReader parses every token
array into numpy views and takes seconds, too slow for `chatbot ask`.
"""

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from chatbot.errors import ModelLoadError

# The converter writes the plan under these keys and owns their names; this module reads them.
from converter.gguf_keys import (
    KEY_FLASH_ATTN,
    KEY_GPU_MEMORY,
    KEY_N_CTX,
    KEY_N_GPU_LAYERS,
    KEY_OFFLOAD_KQV,
)

# GGUF value types: struct format of the fixed-size ones; 8 is a string, 9 an array.
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q"}
_SCALAR |= {11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class StoredPlan:
    """The converter's plan as found in the GGUF."""

    n_gpu_layers: int
    offload_kqv: bool
    flash_attn: bool
    n_ctx: int | None
    gpu_memory: int | None


@dataclass(frozen=True)
class OffloadSettings:
    """What the engine is given, and the words for the status line."""

    n_gpu_layers: int
    offload_kqv: bool
    flash_attn: bool
    gpu_build: bool
    total_layers: int | None  # blocks + output layer, llama.cpp's count; None if unknown
    source: str  # "flags", "plan" or "default": where n_gpu_layers came from
    planned_ctx: int | None  # the context the plan was sized for
    description: str  # e.g. "GPU: 24/31 layers" or "CPU only build: plan of 24 GPU layers ..."

    def as_dict(self) -> dict[str, object]:
        """For EngineInfo.settings."""
        return {
            "n_gpu_layers": self.n_gpu_layers,
            "offload_kqv": self.offload_kqv,
            "flash_attn": self.flash_attn,
        }


def read_header_values(path: Path) -> dict[str, object]:
    """Every scalar and string key-value of a GGUF header (arrays are skipped)."""
    try:
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as m:
            if m[:4] != b"GGUF" or struct.unpack_from("<I", m, 4)[0] < 2:
                raise ModelLoadError(f"{path} is not a GGUF v2+ model file")
            (n_kv,) = struct.unpack_from("<Q", m, 16)
            values: dict[str, object] = {}
            pos = 24
            for _ in range(n_kv):
                key, pos = _string(m, pos)
                (vtype,) = struct.unpack_from("<I", m, pos)
                value, pos = _value(m, pos + 4, vtype)
                if value is not None:
                    values[key] = value
            return values
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read the GGUF header of {path}: {exc}") from exc


def read_plan(path: Path) -> StoredPlan | None:
    """The offload plan stored in the GGUF, or None when the converter wrote none."""
    return _plan_from(read_header_values(path))


def _plan_from(values: dict[str, object]) -> StoredPlan | None:
    if KEY_N_GPU_LAYERS not in values:
        return None
    return StoredPlan(
        n_gpu_layers=int(values[KEY_N_GPU_LAYERS]),
        offload_kqv=bool(values.get(KEY_OFFLOAD_KQV, True)),
        flash_attn=bool(values.get(KEY_FLASH_ATTN, False)),
        n_ctx=_int_or_none(values.get(KEY_N_CTX)),
        gpu_memory=_int_or_none(values.get(KEY_GPU_MEMORY)),
    )


def resolve_offload(
    model_path: Path,
    *,
    gpu_layers: int | None = None,
    flash_attn: bool | None = None,
    gpu_build: bool | None = None,
) -> OffloadSettings:
    """The settings in effect: flags/config (not None) over the GGUF's plan over defaults.

    `gpu_build` defaults to what the loaded llama.cpp reports; `gpu_layers` -1 means all.
    """
    if gpu_build is None:
        import llama_cpp  # here, not at import: reading a plan needs no llama.cpp

        gpu_build = bool(llama_cpp.llama_supports_gpu_offload())
    try:
        values = read_header_values(Path(model_path))
    except ModelLoadError:
        values = {}  # no plan; loading the model reports what is wrong with the file
    plan = _plan_from(values)
    arch = values.get("general.architecture")
    blocks = values.get(f"{arch}.block_count")
    total = int(blocks) + 1 if isinstance(blocks, int) else None
    source = "flags" if gpu_layers is not None else "plan" if plan else "default"
    wanted = gpu_layers if gpu_layers is not None else plan.n_gpu_layers if plan else 0
    kqv = plan.offload_kqv if plan else True
    if not gpu_build:
        # The plan's flash attention was chosen for the GPU; on the CPU only a flag decides.
        fa = bool(flash_attn)
        origin = "--gpu-layers" if source == "flags" else "plan"
        note = f": {origin} of {wanted} GPU layers not applied" if wanted else ""
        return OffloadSettings(
            0, kqv, fa, False, total, source, plan.n_ctx if plan else None, f"CPU only build{note}"
        )
    fa = flash_attn if flash_attn is not None else plan.flash_attn if plan else False
    layers = wanted if total is None or 0 <= wanted <= total else total
    shown = f"{layers}/{total}" if total is not None else ("all" if layers < 0 else str(layers))
    description = f"GPU: {shown} layers" + (", flash attention" if fa else "")
    return OffloadSettings(
        layers, kqv, fa, True, total, source, plan.n_ctx if plan else None, description
    )


def _string(m: mmap.mmap, pos: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<Q", m, pos)
    end = pos + 8 + length
    if end > len(m):
        raise ValueError("string runs past the end of the file")
    return m[pos + 8 : end].decode("utf-8"), end


def _value(m: mmap.mmap, pos: int, vtype: int) -> tuple[object, int]:
    """The value at `pos` (None for arrays, which are skipped) and the position after it."""
    if vtype in _SCALAR:
        fmt = _SCALAR[vtype]
        return struct.unpack_from(fmt, m, pos)[0], pos + struct.calcsize(fmt)
    if vtype == _STRING:
        return _string(m, pos)
    if vtype != _ARRAY:
        raise ValueError(f"unknown GGUF value type {vtype}")
    item_type, count = struct.unpack_from("<IQ", m, pos)
    pos += 12
    if item_type in _SCALAR:
        return None, pos + count * struct.calcsize(_SCALAR[item_type])
    for _ in range(count):
        _, pos = _value(m, pos, item_type)
    return None, pos


def _int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) else None
