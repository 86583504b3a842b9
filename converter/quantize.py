"""llama.cpp's quantizer through llama-cpp-python's ctypes: the only module that calls it.

The input is a float GGUF written by converter.gguf_out; llama.cpp picks per-tensor types for
the requested mix (Q4_K_M keeps some tensors at Q6_K, for example), optionally guided by an
importance matrix and per-tensor type overrides.
"""

import contextlib
import ctypes
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
from tqdm import tqdm

from converter import llama_log
from converter.errors import QuantizationError
from converter.files import atomic_output
from converter.gguf_out import FLOAT_TYPES
from converter.llama_log import ErrorLines

# Name -> llama_ftype, as llama.cpp's quantize tool spells them.
QUANT_TYPES: dict[str, int] = {
    "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "Q6_K": llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K,
    "Q5_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "Q5_K_S": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_S,
    "Q5_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_1,
    "Q5_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_0,
    "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "Q4_K_S": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_S,
    "Q4_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1,
    "Q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
    "IQ4_XS": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ4_XS,
    "IQ4_NL": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ4_NL,
    "Q3_K_L": llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_L,
    "Q3_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_M,
    "Q3_K_S": llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_S,
    "IQ3_M": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ3_M,
    "IQ3_S": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ3_S,
    "IQ3_XS": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ3_XS,
    "IQ3_XXS": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ3_XXS,
    "Q2_K": llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K,
    "Q2_K_S": llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K_S,
    "IQ2_M": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ2_M,
    "IQ2_S": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ2_S,
    "IQ2_XS": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ2_XS,
    "IQ2_XXS": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ2_XXS,
    "IQ1_M": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ1_M,
    "IQ1_S": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ1_S,
}
# llama.cpp refuses these without an importance matrix (most of their tensors need one).
NEEDS_IMATRIX = frozenset({"IQ3_XXS", "IQ2_XS", "IQ2_XXS", "IQ2_S", "IQ1_M", "IQ1_S", "Q2_K_S"})
# Every output type the converter accepts: float types are written directly, not quantized.
ALL_TYPES: tuple[str, ...] = (*FLOAT_TYPES, *QUANT_TYPES)
_PROGRESS = re.compile(r"^\[\s*\d+/\s*\d+\]")  # "[  3/ 29] blk.0.attn_q.weight - ..."


def check_quant(quant: str, *, has_imatrix: bool = False) -> str:
    """The canonical spelling of a known type, or a QuantizationError listing the known ones."""
    name = quant.upper()
    if name not in ALL_TYPES:
        raise QuantizationError(
            f"unknown quantization type {quant!r}; choose one of: {', '.join(ALL_TYPES)}"
        )
    if name in NEEDS_IMATRIX and not has_imatrix:
        raise QuantizationError(
            f"{name} needs an importance matrix (imatrix); choose another type or provide one"
        )
    return name


def quantize_gguf(
    src: Path,
    dst: Path,
    quant: str,
    *,
    imatrix: dict[str, np.ndarray] | None = None,
    tensor_types: list[tuple[str, str]] | None = None,
    threads: int | None = None,
    show_progress: bool = False,
) -> None:
    """Quantize the float GGUF `src` into `dst` (written atomically).

    imatrix: GGUF tensor name -> per-input-column mean of x^2 (length = the tensor's row length).
    tensor_types: (regex searched in GGUF tensor names, GGML type name such as "Q8_0"), first
    match wins; llama.cpp still falls back where a row length does not fit a block size.
    """
    name = check_quant(quant, has_imatrix=bool(imatrix))
    if name in FLOAT_TYPES:
        raise QuantizationError(
            f"{name} is a float type: write it directly, not through the quantizer"
        )
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[name]
    params.nthread = threads or 0
    keep = [_set_imatrix(params, imatrix or {}), _set_tensor_types(params, tensor_types or [])]
    n_tensors = len(gguf.GGUFReader(src).tensors)
    with atomic_output(dst) as temp, _quantizer_log(n_tensors, show_progress) as log:
        code = _run(src, temp, params)
        if code != 0 or not temp.exists():
            raise QuantizationError(
                f"llama.cpp could not quantize {src.name} to {name}: {log.reason()}"
            )
    del keep


def _set_imatrix(params, imatrix: dict[str, np.ndarray]) -> list:
    """Fill params.imatrix with a NULL-name-terminated array; return what must stay alive."""
    if not imatrix:
        return []
    arrays = [np.ascontiguousarray(values, dtype=np.float32).ravel() for values in imatrix.values()]
    for tensor_name, values in zip(imatrix, arrays, strict=True):
        if not np.isfinite(values).all():
            raise QuantizationError(
                f"the importance matrix for {tensor_name} has NaN or infinite values"
            )
    entries = (llama_cpp.llama_model_imatrix_data * (len(arrays) + 1))()
    names = [tensor_name.encode() for tensor_name in imatrix]
    for entry, tensor_name, values in zip(entries, names, arrays, strict=False):
        entry.name = tensor_name
        entry.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entry.size = values.size
    entries[len(arrays)].name = None
    params.imatrix = entries
    return [entries, names, arrays]


def _set_tensor_types(params, tensor_types: Sequence[tuple[str, str]]) -> list:
    """Fill params.tt_overrides with a NULL-pattern-terminated array."""
    if not tensor_types:
        return []
    overrides = (llama_cpp.llama_model_tensor_override * (len(tensor_types) + 1))()
    patterns = []
    for entry, (pattern, type_name) in zip(overrides, tensor_types, strict=False):
        try:
            re.compile(pattern)
            ggml_type = gguf.GGMLQuantizationType[type_name.upper()]
        except re.error as exc:
            raise QuantizationError(f"bad tensor-type pattern {pattern!r}: {exc}") from exc
        except KeyError as exc:
            raise QuantizationError(
                f"unknown tensor type {type_name!r} for pattern {pattern!r}"
            ) from exc
        patterns.append(pattern.encode())
        entry.pattern = patterns[-1]
        entry.type = int(ggml_type)
    overrides[len(tensor_types)].pattern = None
    params.tt_overrides = overrides
    return [overrides, patterns]


def _run(src: Path, dst: Path, params) -> int:
    """Call the quantizer on a worker thread so Ctrl-C in the main thread stays responsive
    (ctypes releases the GIL); the process then exits and the daemon thread with it."""
    result: list[int] = []
    worker = threading.Thread(
        target=lambda: result.append(
            llama_cpp.llama_model_quantize(
                str(src).encode(), str(dst).encode(), ctypes.byref(params)
            )
        ),
        daemon=True,
    )
    worker.start()
    while worker.is_alive():
        worker.join(0.1)
    return result[0] if result else 1


class _QuantizerLog:
    """Listens to llama.cpp while it quantizes: a progress bar tick per tensor, the errors."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar
        self.errors = ErrorLines()

    def __call__(self, level: int, line: str) -> None:
        self.errors(level, line)
        if _PROGRESS.match(line):
            self.bar.update(1)

    def reason(self) -> str:
        """llama.cpp's own failure message (`...: failed to quantize: WHY`), else its last error."""
        for line in reversed(self.errors):
            if "failed to quantize:" in line:
                return line.split("failed to quantize:", 1)[1].strip()
        useful = [line for line in self.errors if "====" not in line]
        return useful[-1] if useful else "see llama.cpp's log for details"


@contextlib.contextmanager
def _quantizer_log(n_tensors: int, show_progress: bool) -> Iterator[_QuantizerLog]:
    with tqdm(total=n_tensors, desc="Quantizing", unit="tensor", disable=not show_progress) as bar:
        listener = _QuantizerLog(bar)
        with llama_log.listen(listener):
            yield listener
