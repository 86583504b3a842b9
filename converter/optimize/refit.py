"""Least-squares repair of the matrices that read a pruned width: down_proj and o_proj.

Width pruning drops FFN neurons (columns of down_proj) or attention heads (columns of o_proj);
the columns that stay were trained alongside the dropped ones. With the Gram matrix G = X^T X of
the layer's input on calibration text, the kept columns K are refit so the layer's output
matches the unpruned one: W_K' = W G[:, K] (G[K, K] + lambda I)^-1, lambda a small share of the
mean diagonal. It costs one forward pass and a small solve per layer, and it starts healing from
a much closer point.
"""

import torch
from torch import nn

from converter.optimize.prune import PrunePlan, Shape, query_columns

DEFAULT_RIDGE = 1e-4  # lambda as a share of the mean diagonal of G[K, K]


class _GramHooks:
    """Forward hooks that sum x^T x of each watched linear layer's input, in float64."""

    def __init__(self, modules: dict[str, nn.Linear]) -> None:
        self.grams: dict[str, torch.Tensor] = {}
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in modules.items()]

    def _hook(self, name: str):
        def hook(_module, args, _output):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            gram = (x.T @ x).double()  # float32 products per window, summed in float64
            self.grams[name] = self.grams[name] + gram if name in self.grams else gram

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@torch.no_grad()
def input_grams(
    model: nn.Module, windows: list[torch.Tensor], modules: dict[str, nn.Linear]
) -> dict[str, torch.Tensor]:
    """X^T X of each module's input over the calibration windows (float64, on the CPU)."""
    hooks = _GramHooks(modules)
    device = next(model.parameters()).device
    try:
        for ids in windows:
            model(input_ids=ids.to(device), use_cache=False)
    finally:
        hooks.remove()
    return {name: gram.cpu() for name, gram in hooks.grams.items()}


def refit_columns(
    weight: torch.Tensor, gram: torch.Tensor, keep: list[int], ridge: float = DEFAULT_RIDGE
) -> torch.Tensor:
    """The kept columns of `weight` (out x in) refit to reproduce the full layer's output."""
    w = weight.detach().double().cpu()
    idx = torch.tensor(keep, dtype=torch.long)
    g_kk = gram[idx][:, idx]
    lam = ridge * float(g_kk.diagonal().mean())
    lhs = g_kk + lam * torch.eye(len(keep), dtype=torch.float64)
    rhs = gram[idx] @ w.T  # (k x out): G[K, :] W^T
    refit = torch.linalg.solve(lhs, rhs).T
    return refit.to(weight.dtype).to(weight.device)


def _targets(model: nn.Module, plan: PrunePlan) -> dict[str, tuple[nn.Linear, list]]:
    """module name -> (linear, kept input columns) for every pruned width in the plan."""
    shape = Shape.of(model)
    layers = model.model.layers
    found = {}
    for lp in plan.kept:
        i = lp.index
        if lp.ffn < shape.ffn:
            found[f"{i}.down"] = (layers[i].mlp.down_proj, plan.ffn_keep[i])
        if lp.kv_heads < shape.kv_heads:
            cols = query_columns(plan.kv_keep[i], shape)
            found[f"{i}.o"] = (layers[i].self_attn.o_proj, cols)
    return found


@torch.no_grad()
def refit_plan(model: nn.Module, plan: PrunePlan, windows: list[torch.Tensor]) -> int:
    """Before apply_plan: refit the kept columns in place (dropped ones are zeroed, then sliced
    away). Returns how many matrices were refit."""
    targets = _targets(model, plan)
    if not targets:
        return 0
    grams = input_grams(model, windows, {name: lin for name, (lin, _) in targets.items()})
    for name, (linear, keep) in targets.items():
        refit = refit_columns(linear.weight, grams.pop(name), keep)
        linear.weight.zero_()
        linear.weight[:, torch.tensor(keep, dtype=torch.long, device=refit.device)] = refit
    return len(targets)
