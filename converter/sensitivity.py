"""How much each tensor group's rounding hurts, measured with llama.cpp on calibration text.

Two measurements, combined into an estimate of the loss (KL divergence of the next-token
distribution from the float model's) for any type given to any matrix:

1. the rounding error each candidate type leaves in each matrix, weighted by the importance
   matrix (converter.qtypes: ggml's own quantizer, milliseconds per matrix);
2. per tensor group (one kind of tensor in one band of blocks, e.g. `ffn_down@0` for the first
   third), the KL divergence on a calibration slice when that group alone is quantized to a
   low type and everything else to Q8_0 (a real llama.cpp file each).

The group's gain (measured KL per unit of weighted error) turns any matrix's error at any type
into an estimated KL; the planner (converter.mix) adds these up. The slice is taken from the
calibration text between the windows the importance matrix reads, never from data/eval.
"""

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from converter import evaluate
from converter.files import temporary_dir
from converter.qtypes import (
    candidate_types,
    float_weights,
    quantize_rows,
    type_info,
    weighted_error,
)

BANDS = 3  # blocks are grouped in this many bands (first, middle, last) per tensor kind
PROBE_WINDOWS = 4
PROBE_CTX = 256
CALIBRATION_WINDOW = 512  # the importance matrix's window (converter.optimize.calibrate.WINDOW)
MAX_ERROR_ROWS = 128  # rows of a matrix the error is measured on (scaled up to all rows)
BASE_TYPE = "Q8_0"  # what the rest of the model is quantized to while one group is probed
PROBE_BITS = 4.0  # probe with the cheapest candidate type of at least this many bits per weight
_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")

Tick = Callable[[str], None]


@dataclass(frozen=True)
class Matrix:
    """One tensor the quantizer will round: its name, group and shape (rows x n_per_row)."""

    name: str
    group: str
    rows: int
    n_per_row: int

    @property
    def n_elements(self) -> int:
        return self.rows * self.n_per_row


@dataclass
class Sensitivity:
    """Errors per matrix and type, the measured KL per group, and the gain that links them."""

    matrices: list[Matrix]
    errors: dict[str, dict[str, float]]  # matrix -> type -> imatrix-weighted squared error
    group_kl: dict[str, float]  # group -> KL (probe) minus the base KL
    base_kl: float  # every matrix at BASE_TYPE
    probe_types: dict[str, str]  # matrix -> the type it was probed at
    gains: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.gains:
            self.gains = self._gains()

    def _gains(self) -> dict[str, float]:
        """KL per unit of error, per group (never negative: noise below the base reads as 0)."""
        probe_error: dict[str, float] = {}
        for m in self.matrices:
            probe_error[m.group] = (
                probe_error.get(m.group, 0.0) + self.errors[m.name][self.probe_types[m.name]]
            )
        return {
            g: max(kl, 0.0) / probe_error[g] if probe_error.get(g, 0.0) > 0 else 0.0
            for g, kl in self.group_kl.items()
        }

    def loss(self, matrix: Matrix, type_name: str) -> float:
        """Estimated KL added by giving `matrix` the type `type_name`."""
        return self.gains.get(matrix.group, 0.0) * self.errors[matrix.name][type_name]

    def to_record(self) -> dict[str, dict[str, float]]:
        """Per group: the measured KL and the gain (what the report keeps)."""
        return {
            g: {"kl": round(kl, 6), "gain": float(f"{self.gains[g]:.4g}")}
            for g, kl in sorted(self.group_kl.items())
        }


def group_of(name: str, n_blocks: int, bands: int = BANDS) -> str:
    """`blk.12.ffn_down.weight` -> `ffn_down@1` (band 1 of 3); other tensors by their name."""
    match = _BLOCK.match(name)
    if not match:
        return name.removesuffix(".weight")
    band = int(match.group(1)) * bands // max(n_blocks, 1)
    return f"{match.group(2).removesuffix('.weight')}@{band}"


def matrices_of(float_path: Path) -> list[Matrix]:
    """Every 2-D tensor of a float GGUF (what llama.cpp quantizes), with its group."""
    reader = gguf.GGUFReader(float_path)
    n_blocks = 1 + max(
        (int(m.group(1)) for t in reader.tensors if (m := _BLOCK.match(t.name))), default=0
    )
    return [
        Matrix(t.name, group_of(t.name, n_blocks), int(t.shape[1]), int(t.shape[0]))
        for t in reader.tensors
        if len(t.shape) == 2
    ]


def measure_errors(
    float_path: Path, imatrix: dict[str, np.ndarray] | None, tick: Tick | None = None
) -> dict[str, dict[str, float]]:
    """Weighted rounding error of every candidate type in every matrix (rows sampled evenly)."""
    reader = gguf.GGUFReader(float_path)
    tensors = [t for t in reader.tensors if len(t.shape) == 2]

    def one(tensor) -> tuple[str, dict[str, float]]:
        data = float_weights(tensor)
        step = max(1, data.shape[0] // MAX_ERROR_ROWS)
        sample = data[::step]
        scale = data.shape[0] / sample.shape[0]
        weights = imatrix.get(tensor.name) if imatrix else None
        types = candidate_types(sample.shape[1], has_imatrix=weights is not None)
        errors = {t.name: scale * weighted_error(sample, t.name, weights) for t in types}
        if tick:
            tick(tensor.name)
        return tensor.name, errors

    with ThreadPoolExecutor(max_workers=evaluate.n_threads()) as pool:
        return dict(pool.map(one, tensors))


def probe_type(matrix: Matrix, errors: dict[str, float]) -> str:
    """The cheapest type of at least PROBE_BITS bits that this matrix can take."""
    infos = [type_info(name) for name in errors]
    fitting = [i for i in infos if i.bits_per_weight >= PROBE_BITS] or infos
    return min(fitting, key=lambda i: (i.bits_per_weight, errors[i.name])).name


@dataclass(frozen=True)
class ProbeText:
    """Reference log-probabilities of the float model on the calibration slice."""

    windows: list[list[int]]
    log_probs: list[np.ndarray]  # per window, [ctx, vocab] float32


def calibration_slice(tokens: evaluate.TokenizedText, count: int, ctx: int, part: int) -> list:
    """`count` windows of `ctx` tokens from the calibration text's 512-token windows that the
    importance matrix does not read (quantizing alone reads an evenly spread 24): the free
    windows alternate between the probes (part 0) and the hold-out (part 1)."""
    from converter.optimize.calibrate import IMATRIX_ONLY_WINDOWS, spread

    windows = evaluate.token_windows(tokens, CALIBRATION_WINDOW)
    used = set(spread(list(range(len(windows))), IMATRIX_ONLY_WINDOWS))
    free = [w for i, w in enumerate(windows) if i not in used] or windows
    mine = free[part::2] or free
    return [w[:ctx] for w in spread(mine, count)]


def probe_text(float_path: Path, text: str) -> ProbeText:
    """PROBE_WINDOWS windows of the calibration text and the float model's log-probabilities."""
    tokens = evaluate.tokenize_gguf(float_path, text)
    windows = calibration_slice(tokens, PROBE_WINDOWS, PROBE_CTX, part=0)
    logits = evaluate.GgufLogits(float_path, PROBE_CTX)
    try:
        return ProbeText(windows, [_log_softmax(logits(w)) for w in windows])
    finally:
        logits.close()


def kl_to_reference(gguf_path: Path, probe: ProbeText) -> float:
    """Mean KL(float || this file) over every position of the probe windows."""
    logits = evaluate.GgufLogits(gguf_path, len(probe.windows[0]))
    total, count = 0.0, 0
    try:
        for window, ref in zip(probe.windows, probe.log_probs, strict=True):
            mine = _log_softmax(logits(window))
            total += float((np.exp(ref) * (ref - mine)).sum(dtype=np.float64))
            count += len(window)
    finally:
        logits.close()
    return total / count


def measure(
    float_path: Path,
    imatrix: dict[str, np.ndarray] | None,
    calibration_text: str,
    tick: Tick | None = None,
) -> Sensitivity:
    """Errors for every matrix and type, then one llama.cpp probe per group: the base file
    (every matrix at BASE_TYPE) with that group's matrices spliced in at their probe type."""
    from converter.gguf_splice import splice
    from converter.quantize import quantize_gguf

    matrices = matrices_of(float_path)
    errors = measure_errors(float_path, imatrix, tick)
    probes = {m.name: probe_type(m, errors[m.name]) for m in matrices}
    text = probe_text(float_path, calibration_text)
    tensors = {t.name: t for t in gguf.GGUFReader(float_path).tensors}
    kls: dict[str, float] = {}
    with temporary_dir(float_path.parent, "probes") as folder:
        base = folder / "base.gguf"
        quantize_gguf(float_path, base, BASE_TYPE, imatrix=imatrix)
        kls[""] = kl_to_reference(base, text)
        for group in sorted({m.group for m in matrices}):
            swap = {
                m.name: (probes[m.name], _packed(tensors[m.name], probes[m.name], imatrix))
                for m in matrices
                if m.group == group
            }
            splice(base, folder / "probe.gguf", swap)
            kls[group] = kl_to_reference(folder / "probe.gguf", text)
            if tick:
                tick(f"probe {group}")
    base_kl = kls.pop("")
    return Sensitivity(
        matrices, errors, {g: kl - base_kl for g, kl in kls.items()}, base_kl, probes
    )


def _packed(tensor, type_name: str, imatrix: dict[str, np.ndarray] | None) -> np.ndarray:
    weights = imatrix.get(tensor.name) if imatrix else None
    return quantize_rows(float_weights(tensor), type_name, weights)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    peak = logits.max(axis=1, keepdims=True)
    shifted = logits - peak
    return (shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))).astype(np.float32)
