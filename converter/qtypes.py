"""ggml's tensor types through ctypes: bytes per row, and the error a type leaves in a matrix.

The mixed-precision planner (converter.mix) needs, for every matrix and every type it may get,
the file bytes and the rounding error, without quantizing whole models: ggml's own
`ggml_quantize_chunk` (the function llama.cpp's quantizer calls, importance matrix included)
and the type's `to_float` give both in milliseconds per matrix.

A type is offered only where it fits the row length (K and IQ types need 256 columns, the rest
32), so llama.cpp never silently falls back to another type behind the planner's back.
"""

import ctypes
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import gguf
import gguf.quants
import numpy as np

from converter.errors import QuantizationError

# Ladder of types the planner chooses from, best first. Names are GGML tensor types (not file
# types): Q4_K is the tensor type inside Q4_K_M files.
LADDER: tuple[str, ...] = (
    "F16", "Q8_0", "Q6_K", "Q5_K", "Q5_1", "Q5_0", "Q4_K", "Q4_1", "IQ4_NL", "Q4_0", "IQ4_XS",
    "Q3_K", "IQ3_S", "Q2_K",
)  # fmt: skip
# Types ggml refuses to quantize without an importance matrix.
NEEDS_IMATRIX = frozenset({"IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"})


class _TypeTraits(ctypes.Structure):
    """ggml.h `struct ggml_type_traits` (checked against ggml_type_size at load)."""

    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_int64)


@dataclass(frozen=True)
class TypeInfo:
    """What a ggml type costs: elements per block and bytes per block."""

    name: str
    block: int
    block_bytes: int

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.block_bytes / self.block

    def row_bytes(self, n_per_row: int) -> int:
        return n_per_row // self.block * self.block_bytes

    def fits(self, n_per_row: int) -> bool:
        return n_per_row % self.block == 0


def type_info(name: str) -> TypeInfo:
    block, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]]
    return TypeInfo(name, block, block_bytes)


# What llama.cpp's quantizer writes instead when a type does not fit a row length.
_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


def effective_type(name: str, n_per_row: int) -> str:
    """The type llama.cpp actually writes for `name` in rows of `n_per_row` values."""
    try:
        info = type_info(name.upper())
    except KeyError as exc:
        raise QuantizationError(f"unknown tensor type {name!r}") from exc
    if info.fits(n_per_row):
        return info.name
    return _FALLBACK.get(info.name, "IQ4_NL")


def candidate_types(n_per_row: int, *, has_imatrix: bool) -> list[TypeInfo]:
    """The ladder's types that fit this row length (and need no imatrix when there is none)."""
    infos = [type_info(name) for name in LADDER]
    return [
        info
        for info in infos
        if info.fits(n_per_row) and (has_imatrix or info.name not in NEEDS_IMATRIX)
    ]


@functools.cache
def _ggml() -> ctypes.CDLL:
    """libggml-base from llama-cpp-python's own folder (the library llama.cpp itself uses)."""
    import llama_cpp

    folder = Path(llama_cpp.__file__).parent / "lib"
    names = {"darwin": "libggml-base.dylib", "win32": "ggml-base.dll"}
    lib = ctypes.CDLL(str(folder / names.get(sys.platform, "libggml-base.so")))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
        ctypes.c_int64, ctypes.c_void_p,
    ]  # fmt: skip
    lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    lib.ggml_type_size.restype = ctypes.c_size_t
    lib.ggml_type_size.argtypes = [ctypes.c_int]
    return lib


def _traits(name: str) -> _TypeTraits:
    """The type's traits, after checking that the struct layout matches this ggml build."""
    code = int(gguf.GGMLQuantizationType[name])
    traits = _ggml().ggml_get_type_traits(code).contents
    info = type_info(name)
    if traits.type_size != _ggml().ggml_type_size(code) or traits.blck_size != info.block:
        raise QuantizationError(f"this llama.cpp build's ggml type table differs for {name}")
    return traits


def quantize_rows(weights: np.ndarray, name: str, imatrix: np.ndarray | None) -> np.ndarray:
    """`weights` (rows x n_per_row) as ggml packs them in type `name` (the bytes llama.cpp's
    quantizer would write, importance matrix included)."""
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    rows, n_per_row = weights.shape
    info = type_info(name)
    if not info.fits(n_per_row):
        raise QuantizationError(f"{name} needs rows of a multiple of {info.block} values")
    if name in NEEDS_IMATRIX and imatrix is None:
        raise QuantizationError(f"{name} needs an importance matrix")
    packed = np.empty(rows * info.row_bytes(n_per_row), dtype=np.uint8)
    imatrix_ptr = None
    if imatrix is not None:
        imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
        imatrix_ptr = imatrix.ctypes.data
    code = int(gguf.GGMLQuantizationType[name])
    _ggml().ggml_quantize_chunk(
        code, weights.ctypes.data, packed.ctypes.data, 0, rows, n_per_row, imatrix_ptr
    )
    return packed


def roundtrip(weights: np.ndarray, name: str, imatrix: np.ndarray | None) -> np.ndarray:
    """`weights` (rows x n_per_row, float32) quantized to `name` by ggml and read back."""
    packed = quantize_rows(weights, name, imatrix)
    out = np.empty(weights.shape, dtype=np.float32)
    to_float = _TO_FLOAT(_traits(name).to_float)
    to_float(packed.ctypes.data, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), out.size)
    return out


def float_weights(tensor) -> np.ndarray:
    """A float GGUF tensor (F32, F16 or BF16) as float32, rows x n_per_row."""
    data = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    return np.asarray(data, dtype=np.float32).reshape(int(tensor.shape[1]), int(tensor.shape[0]))


def weighted_error(weights: np.ndarray, name: str, imatrix: np.ndarray | None) -> float:
    """Sum over the matrix of imatrix[column] x (w - Q(w))^2: the expected squared change of the
    layer's output on calibration activations (the diagonal approximation llama.cpp uses)."""
    if name == "F16":
        error = weights - weights.astype(np.float16).astype(np.float32)
    else:
        error = weights - roundtrip(weights, name, imatrix)
    scale = imatrix if imatrix is not None else np.ones(weights.shape[1], dtype=np.float32)
    return float(np.einsum("ij,ij,j->", error, error, scale, dtype=np.float64))
