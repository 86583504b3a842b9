"""One pass over calibration text that tells the pruner and the quantizer what matters.

Forward hooks on the HF torch model collect, per block:
- block influence, 1 - cos(h_in, h_out) averaged over tokens, and the angular distance
  arccos(cos) / pi: a block that barely turns its input is the cheapest to drop;
- the importance matrix: for every linear weight, the mean of x^2 over each input column. It is
  what llama.cpp's quantizer weighs rounding errors with (`llama_model_quantize_params.imatrix`),
  and it also carries the FFN neuron activations (the input of down_proj) and the per-head
  attention outputs (the input of o_proj) that width pruning scores.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from converter.errors import ConverterError
from converter.paths import PROJECT_DATA

DEFAULT_CALIBRATION = PROJECT_DATA / "calibration"
DEFAULT_CALIBRATION_FILE = DEFAULT_CALIBRATION / "calibration.txt"
MIN_TOKENS = 128  # fewer tokens give statistics too noisy to rank layers or neurons by
WINDOW = 512
# Quantizing alone needs only the importance matrix, and 24 windows (12k tokens) spread over
# the calibration text give it (like llama-imatrix --chunks): perplexity within noise of the
# whole 53k-token corpus, in a quarter of the time. Pruning, the refit and healing use it all.
IMATRIX_ONLY_WINDOWS = 24


@dataclass
class CalibrationStats:
    """What the calibration pass learned; imatrix keys are HF module names."""

    n_tokens: int
    block_influence: np.ndarray  # (n_layers,)
    angular_distance: np.ndarray  # (n_layers,)
    imatrix: dict[str, np.ndarray]  # "model.layers.3.mlp.down_proj" -> mean x^2 per column

    def column_energy(self, layer: int, module: str) -> np.ndarray:
        """Mean x^2 per input column of one block's linear layer, e.g. ("mlp.down_proj")."""
        return self.imatrix[f"model.layers.{layer}.{module}"]


def default_calibration_files() -> list[Path]:
    """Every text file shipped in data/calibration: the more varied the text, the better
    the pruning scores, the least-squares refit and the healing generalise."""
    return sorted(DEFAULT_CALIBRATION.glob("*.txt")) or [DEFAULT_CALIBRATION_FILE]


def read_calibration_text(paths: Sequence[Path] = ()) -> str:
    """The calibration files joined; missing or empty files are the user's to fix."""
    paths = list(paths) or default_calibration_files()
    parts = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConverterError(f"cannot read calibration file {path}: {exc}") from exc
        if not text.strip():
            raise ConverterError(
                f"calibration file {path} is empty: give --calibration a text file with a few "
                "pages of text like the model's use"
            )
        parts.append(text)
    return "\n\n".join(parts)


def token_windows(tokenizer, text: str, window: int = WINDOW) -> list[torch.Tensor]:
    """The text as consecutive token windows; too little text to score is refused."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < MIN_TOKENS:
        raise ConverterError(
            f"calibration text is too short to score: {len(ids)} tokens, at least {MIN_TOKENS} "
            "needed; give --calibration a longer text"
        )
    chunks = [ids[i : i + window] for i in range(0, len(ids), window)]
    if len(chunks) > 1 and len(chunks[-1]) < window // 4:
        chunks.pop()  # a short tail adds little and skews the per-window averages
    return [torch.tensor([chunk]) for chunk in chunks]


class _Accumulator:
    """Running sums of x^2 per column and of block cosines, filled by forward hooks."""

    def __init__(self, n_layers: int) -> None:
        self.sq: dict[str, torch.Tensor] = {}
        self.rows: dict[str, int] = {}
        self.cos_sum = np.zeros(n_layers)
        self.angle_sum = np.zeros(n_layers)
        self.tokens = 0

    def linear_hook(self, name: str):
        def hook(_module, args, _output):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            total = x.pow(2).sum(0)
            self.sq[name] = self.sq[name] + total if name in self.sq else total
            self.rows[name] = self.rows.get(name, 0) + x.shape[0]

        return hook

    def block_hook(self, index: int):
        def hook(_module, args, kwargs, output):
            h_in = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            h_out = output[0] if isinstance(output, tuple) else output
            cos = nn.functional.cosine_similarity(h_in.float(), h_out.float(), dim=-1).flatten()
            cos = cos.clamp(-1.0, 1.0)
            self.cos_sum[index] += float(cos.sum())
            self.angle_sum[index] += float(torch.arccos(cos).sum() / np.pi)

        return hook

    def imatrix(self) -> dict[str, np.ndarray]:
        return {k: (v / self.rows[k]).cpu().numpy().astype(np.float32) for k, v in self.sq.items()}


def _linear_modules(model: nn.Module) -> dict[str, nn.Linear]:
    """The block linears plus the output layer: the matrices llama.cpp quantizes."""
    found = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    return {n: m for n, m in found.items() if ".layers." in n or n == "lm_head"}


@torch.no_grad()
def run_pass(model: nn.Module, windows: list[torch.Tensor], *, blocks: bool = True) -> _Accumulator:
    """Forward every window with hooks attached."""
    layers = getattr(getattr(model, "model", None), "layers", None) or []
    names = _linear_modules(model)
    acc = _Accumulator(len(layers))
    handles = [m.register_forward_hook(acc.linear_hook(n)) for n, m in names.items()]
    if blocks:
        handles += [
            layer.register_forward_hook(acc.block_hook(i), with_kwargs=True)
            for i, layer in enumerate(layers)
        ]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for ids in windows:
            model(input_ids=ids.to(device), use_cache=False)
            acc.tokens += ids.numel()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return acc


def calibrate(model: nn.Module, windows: list[torch.Tensor]) -> CalibrationStats:
    """Block influence, angular distance and the importance matrix in one pass."""
    acc = run_pass(model, windows)
    return CalibrationStats(
        n_tokens=acc.tokens,
        block_influence=1.0 - acc.cos_sum / acc.tokens,
        angular_distance=acc.angle_sum / acc.tokens,
        imatrix=acc.imatrix(),
    )


def collect_imatrix(model: nn.Module, windows: list[torch.Tensor]) -> dict[str, np.ndarray]:
    """The importance matrix alone, for a model changed since calibration (pruned, healed)."""
    return run_pass(model, windows, blocks=False).imatrix()


def gguf_imatrix(imatrix: dict[str, np.ndarray], architecture) -> dict[str, np.ndarray]:
    """HF module names -> GGUF tensor names (the keys llama.cpp's quantizer looks up).

    With tied embeddings the output layer is token_embd itself, so its statistics go there.
    """
    out = {}
    for hf_name, values in imatrix.items():
        if hf_name == "lm_head" and architecture.tied_embeddings:
            out["token_embd.weight"] = values
        elif (name := architecture.gguf_name(hf_name + ".weight")) is not None:
            out[name] = values
    return out


def spread(windows: list, count: int) -> list:
    """At most `count` windows, evenly spaced, so that every calibration file is represented."""
    if len(windows) <= count:
        return windows
    return [windows[i * len(windows) // count] for i in range(count)]
