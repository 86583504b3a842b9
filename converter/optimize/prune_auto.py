"""The automatic pruning plan (`--prune RATIO`): depth and width mixed where it hurts least.

Each FFN width (in K-quant steps) and head-group count is tried with the fewest
lowest-influence blocks that reach the ratio; each mix is applied to a copy of the model and
scored by its next-token loss on calibration windows. The table of tries is printed.
"""

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from converter.errors import ConverterError
from converter.optimize.calibrate import CalibrationStats
from converter.optimize.prune import PrunePlan, Shape, apply_plan, make_plan


@dataclass
class Candidate:
    """One mix of depth and width the automatic plan tried, with its calibration loss."""

    layers: int
    ffn_ratio: float
    heads: int
    removed: float
    loss: float
    plan: PrunePlan = field(repr=False)

    def row(self) -> str:
        return (
            f"{self.layers:>6}  {self.ffn_ratio:>9.3f}  {self.heads:>5}  {self.removed:>7.1%}  "
            f"{self.loss:>8.4f}"
        )


def auto_plan(
    model: nn.Module, stats: CalibrationStats, windows: list[torch.Tensor], ratio: float
) -> tuple[PrunePlan, list[Candidate]]:
    """Remove about `ratio` of the block parameters where the calibration loss rises least.

    Tries each FFN width (in K-quant steps) and head-group count, adds the fewest
    lowest-influence blocks that reach the ratio, measures each mix on calibration windows.
    `ratio` was checked by converter.options.
    """
    shape = Shape.of(model)
    step = shape.granule if shape.granule > 1 else max(1, shape.ffn // 8)
    widths = [w for w in range(shape.ffn, shape.ffn // 2 - 1, -step) if w > 0]
    candidates = []
    for heads in range(min(2, shape.kv_heads)):
        for width in widths:
            ffn_ratio = 1.0 - width / shape.ffn
            plan = _smallest_depth_plan(model, stats, shape, ffn_ratio, heads, ratio)
            if plan is not None:
                loss = calibration_loss(model, plan, windows[:2])
                layers = sum(not lp.keep for lp in plan.layers)
                candidates.append(
                    Candidate(layers, ffn_ratio, heads, plan.removed_fraction, loss, plan)
                )
    if not candidates:
        raise ConverterError(f"--prune {ratio}: no plan removes that much; give a smaller ratio")
    return min(candidates, key=lambda c: c.loss).plan, candidates


def _smallest_depth_plan(model, stats, shape: Shape, ffn_ratio: float, heads: int, ratio: float):
    """The plan with this width that removes the fewest blocks and still reaches `ratio`."""
    for layers in range(shape.n_layers // 2 + 1):
        plan = make_plan(model, stats, layers=layers, ffn_ratio=ffn_ratio, heads=heads)
        if plan.removed_fraction >= ratio - 0.01:
            return plan
    return None


@torch.no_grad()
def calibration_loss(model: nn.Module, plan: PrunePlan, windows: list[torch.Tensor]) -> float:
    """Mean next-token loss of the model pruned by `plan`, on a copy."""
    pruned = apply_plan(copy.deepcopy(model), plan).eval()
    device = next(pruned.parameters()).device
    losses = [float(pruned(input_ids=w.to(device), labels=w.to(device)).loss) for w in windows]
    del pruned
    return sum(losses) / len(losses)


def candidates_table(candidates: list[Candidate], chosen: PrunePlan) -> str:
    """The mixes the automatic plan tried, the chosen one marked."""
    rows = [f"  {'blocks':>6}  {'ffn_ratio':>9}  {'kv-':>5}  {'removed':>7}  {'loss':>8}"]
    rows += [("* " if c.plan is chosen else "  ") + c.row() for c in candidates]
    return "\n".join(rows)
