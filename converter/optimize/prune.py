"""Structured pruning that really shrinks the GGUF: whole blocks, FFN neurons, KV-head groups.

Unstructured zeros do not speed llama.cpp up; smaller matrices and fewer blocks do. Scores come
from one calibration pass (converter.optimize.calibrate):
- depth: the blocks with the lowest influence (1 - cos(h_in, h_out)) go first;
- FFN neurons: activation x weight norm, sqrt(E[a_j^2]) * ||W_down[:, j]||;
- KV-head groups (a KV head and the query heads sharing it): the expected energy the group
  writes through o_proj, sum over its columns of E[o^2] * ||W_o[:, c]||^2.
Uniform widths keep the `llama` architecture (rounded to multiples of 256 where the model allows,
so K-quants apply); per-layer widths are written as `deci` (converter.architectures.deci).
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from converter.errors import ConverterError
from converter.optimize.calibrate import CalibrationStats
from converter.options import kv_groups_removed

if TYPE_CHECKING:
    from converter.checkpoint import Checkpoint

K_QUANT_BLOCK = 256


@dataclass
class LayerPlan:
    """One block of the unpruned model and what is left of it."""

    index: int
    keep: bool
    ffn: int
    heads: int
    kv_heads: int
    influence: float


@dataclass
class PrunePlan:
    """What to remove, per block of the unpruned model."""

    layers: list[LayerPlan]
    ffn_keep: dict[int, list[int]] = field(default_factory=dict)
    kv_keep: dict[int, list[int]] = field(default_factory=dict)
    params_before: int = 0
    params_after: int = 0

    @property
    def kept(self) -> list[LayerPlan]:
        return [layer for layer in self.layers if layer.keep]

    @property
    def per_layer(self) -> bool:
        """Widths differ between kept blocks: only the deci architecture can hold it."""
        return len({(lp.ffn, lp.heads, lp.kv_heads) for lp in self.kept}) > 1

    @property
    def removed_fraction(self) -> float:
        return 1.0 - self.params_after / self.params_before

    def table(self) -> str:
        """The plan as a printable table, one row per block."""
        rows = [
            f"{'block':>5}  {'influence':>9}  {'action':<8}  {'ffn':>6}  {'heads':>5}  {'kv':>3}"
        ]
        for lp in self.layers:
            action = "keep" if lp.keep else "remove"
            widths = f"{lp.ffn:>6}  {lp.heads:>5}  {lp.kv_heads:>3}" if lp.keep else ""
            rows.append(f"{lp.index:>5}  {lp.influence:>9.4f}  {action:<8}  {widths}")
        rows.append(
            f"block parameters {self.params_before:,} -> {self.params_after:,} "
            f"(-{self.removed_fraction:.1%}), architecture {'deci' if self.per_layer else 'llama'}"
        )
        return "\n".join(rows)


@dataclass(frozen=True)
class Shape:
    """The dimensions of a llama-style model that pruning changes."""

    n_layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, model: nn.Module) -> "Shape":
        c = model.config
        if not hasattr(model, "model") or not hasattr(model.model, "layers"):
            raise ConverterError(f"pruning supports llama-style models, not {type(model).__name__}")
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        kv = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        return cls(
            c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.num_attention_heads, kv,
            head_dim,
        )  # fmt: skip

    @property
    def granule(self) -> int:
        """FFN widths move in steps of 256 when the model is big enough for K-quants."""
        return (
            K_QUANT_BLOCK if self.ffn % K_QUANT_BLOCK == 0 and self.ffn >= 2 * K_QUANT_BLOCK else 1
        )

    def block_params(self, ffn: int, heads: int, kv_heads: int) -> int:
        return 3 * self.hidden * ffn + 2 * self.hidden * self.head_dim * (heads + kv_heads)

    def round_ffn(self, width: float) -> int:
        g = self.granule
        return int(min(self.ffn, max(g, round(width / g) * g)))


def neuron_scores(model: nn.Module, stats: CalibrationStats, layer: int) -> np.ndarray:
    """Activation x weight norm of every FFN neuron of one block."""
    down = model.model.layers[layer].mlp.down_proj.weight.detach().float()
    norms = down.norm(dim=0).cpu().numpy()
    return np.sqrt(stats.column_energy(layer, "mlp.down_proj")) * norms


def group_scores(model: nn.Module, stats: CalibrationStats, layer: int, shape: Shape) -> np.ndarray:
    """Energy each KV-head group writes into the residual stream through o_proj."""
    o = model.model.layers[layer].self_attn.o_proj.weight.detach().float()
    energy = stats.column_energy(layer, "self_attn.o_proj") * (o.pow(2).sum(0).cpu().numpy())
    return energy.reshape(shape.kv_heads, -1).sum(1)


def make_plan(
    model: nn.Module,
    stats: CalibrationStats,
    *,
    layers: int = 0,
    ffn_ratio: float = 0.0,
    heads: float = 0.0,
    per_layer: bool = False,
) -> PrunePlan:
    """The blocks, neurons and head groups to remove; per_layer lets widths differ (deci).
    The request was checked against the model by converter.options."""
    shape = Shape.of(model)
    groups = kv_groups_removed(heads, shape.kv_heads)
    dropped = set(np.argsort(stats.block_influence, kind="stable")[:layers].tolist())
    kept = [i for i in range(shape.n_layers) if i not in dropped]
    ffn = {i: neuron_scores(model, stats, i) for i in kept}
    grp = {i: group_scores(model, stats, i, shape) for i in kept}
    if per_layer:
        ffn_width = _global_counts(ffn, shape.round_ffn(shape.ffn * (1 - ffn_ratio)), shape.granule)
        kv_width = _global_counts(grp, shape.kv_heads - groups, 1)
    else:
        ffn_width = dict.fromkeys(kept, shape.round_ffn(shape.ffn * (1 - ffn_ratio)))
        kv_width = dict.fromkeys(kept, shape.kv_heads - groups)
    plan = PrunePlan(layers=[], params_before=shape.n_layers * shape.block_params(
        shape.ffn, shape.heads, shape.kv_heads))  # fmt: skip
    rep = shape.heads // shape.kv_heads
    for i in range(shape.n_layers):
        influence = float(stats.block_influence[i])
        if i in dropped:
            plan.layers.append(LayerPlan(i, False, 0, 0, 0, influence))
            continue
        plan.ffn_keep[i] = _top(ffn[i], ffn_width[i])
        plan.kv_keep[i] = _top(grp[i], kv_width[i])
        plan.layers.append(
            LayerPlan(i, True, ffn_width[i], kv_width[i] * rep, kv_width[i], influence)
        )
    plan.params_after = sum(shape.block_params(lp.ffn, lp.heads, lp.kv_heads) for lp in plan.kept)
    return plan


def _top(scores: np.ndarray, count: int) -> list[int]:
    """Indices of the `count` highest scores, in their original order."""
    return sorted(np.argsort(-scores, kind="stable")[:count].tolist())


def _global_counts(scores: dict[int, np.ndarray], per_block: int, granule: int) -> dict[int, int]:
    """Per-block widths from one ranking across blocks, same total, multiples of `granule`."""
    flat = np.concatenate([s / (s.sum() or 1.0) for s in scores.values()])
    owner = np.concatenate([np.full(len(s), i) for i, s in scores.items()])
    chosen = owner[np.argsort(-flat, kind="stable")[: per_block * len(scores)]]
    counts = {}
    for i, s in scores.items():
        raw = int((chosen == i).sum())
        counts[i] = int(min(len(s), max(granule, round(raw / granule) * granule)))
    return counts


def apply_plan(model: nn.Module, plan: PrunePlan) -> nn.Module:
    """Remove the planned blocks, neurons and head groups from the torch model in place."""
    shape = Shape.of(model)
    layers = model.model.layers
    for lp in plan.kept:
        _prune_mlp(layers[lp.index].mlp, plan.ffn_keep[lp.index])
        _prune_attention(layers[lp.index].self_attn, plan.kv_keep[lp.index], shape)
    model.model.layers = nn.ModuleList([layers[lp.index] for lp in plan.kept])
    for new_index, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = new_index
    _update_config(model.config, plan, shape)
    return model


def _prune_mlp(mlp: nn.Module, keep: list[int]) -> None:
    idx = torch.tensor(keep, dtype=torch.long)
    mlp.gate_proj = _sliced(mlp.gate_proj, rows=idx)
    mlp.up_proj = _sliced(mlp.up_proj, rows=idx)
    mlp.down_proj = _sliced(mlp.down_proj, cols=idx)


def query_columns(keep_groups: list[int], shape: Shape) -> list[int]:
    """Rows of q_proj (and columns of o_proj) that belong to the kept KV-head groups."""
    rep, hd = shape.heads // shape.kv_heads, shape.head_dim
    q_heads = [g * rep + r for g in keep_groups for r in range(rep)]
    return [h * hd + d for h in q_heads for d in range(hd)]


def _prune_attention(attn: nn.Module, keep_groups: list[int], shape: Shape) -> None:
    hd = shape.head_dim
    q_rows = torch.tensor(query_columns(keep_groups, shape), dtype=torch.long)
    kv_rows = torch.tensor([g * hd + d for g in keep_groups for d in range(hd)], dtype=torch.long)
    attn.q_proj = _sliced(attn.q_proj, rows=q_rows)
    attn.k_proj = _sliced(attn.k_proj, rows=kv_rows)
    attn.v_proj = _sliced(attn.v_proj, rows=kv_rows)
    attn.o_proj = _sliced(attn.o_proj, cols=q_rows)


def _sliced(linear: nn.Linear, *, rows=None, cols=None) -> nn.Linear:
    """A new Linear holding the chosen output rows / input columns of `linear`."""
    w = linear.weight.data
    w = w[rows.to(w.device)] if rows is not None else w
    w = w[:, cols.to(w.device)] if cols is not None else w
    has_bias = linear.bias is not None
    new = nn.Linear(w.shape[1], w.shape[0], bias=has_bias, device=w.device, dtype=w.dtype)
    new.weight.data.copy_(w)
    if has_bias:
        b = linear.bias.data
        new.bias.data.copy_(b[rows.to(b.device)] if rows is not None else b)
    return new


def _update_config(config, plan: PrunePlan, shape: Shape) -> None:
    """Config that describes the pruned model; per-layer widths as lists (deci)."""
    kept = plan.kept
    config.num_hidden_layers = len(kept)
    config.head_dim = shape.head_dim
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        config.layer_types = [layer_types[lp.index] for lp in kept]
    config.intermediate_size = max(lp.ffn for lp in kept)
    config.num_attention_heads = max(lp.heads for lp in kept)
    config.num_key_value_heads = max(lp.kv_heads for lp in kept)
    if plan.per_layer:
        config.layer_intermediate_sizes = [lp.ffn for lp in kept]
        config.layer_num_attention_heads = [lp.heads for lp in kept]
        config.layer_num_key_value_heads = [lp.kv_heads for lp in kept]


def pruned_checkpoint(model: nn.Module, source_config: dict, tokenizer_dir) -> "Checkpoint":
    """The pruned torch model as an in-memory checkpoint the GGUF writer takes."""
    from converter.architectures.deci import PRUNED_LLAMA
    from converter.checkpoint import Checkpoint

    c = model.config
    config = dict(source_config)
    for key in ("num_hidden_layers", "intermediate_size", "num_attention_heads",
                "num_key_value_heads", "head_dim", "layer_types"):  # fmt: skip
        if getattr(c, key, None) is not None:
            config[key] = getattr(c, key)
    if getattr(c, "layer_intermediate_sizes", None):
        if config.get("architectures") != ["LlamaForCausalLM"]:
            raise ConverterError(
                "per-layer widths are written as deci, which only llama models fit"
            )
        config["architectures"] = [PRUNED_LLAMA]
        for key in ("layer_intermediate_sizes", "layer_num_attention_heads",
                    "layer_num_key_value_heads"):  # fmt: skip
            config[key] = list(getattr(c, key))
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    return Checkpoint.from_state_dict(config, state, tokenizer_dir)
