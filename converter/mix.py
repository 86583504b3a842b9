"""Mixed precision chosen by measurement: a type per matrix so the file fits a budget.

`--target-size 105MB` (or `--target-bpw 5.5`) gives every matrix the type that, summed over the
model, keeps the estimated loss least (converter.sensitivity: measured KL per group times each
matrix's rounding error at each type) while the file stays within the budget. The choice is an
exact multiple-choice knapsack over a byte grid (rounded up, so the budget is never exceeded);
`--tensor-type` patterns still win: the matrices they match keep the user's type and only the
bytes left over are planned. The result is a list of per-tensor overrides for llama.cpp's
quantizer (converter.quantize), so llama.cpp still writes the file.
"""

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from converter.errors import ConverterError
from converter.qtypes import effective_type, type_info
from converter.sensitivity import Matrix, Sensitivity

_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(i?)B?\s*$", re.IGNORECASE)
_BLOCK = re.compile(r"^blk\.(\d+)\.")
ALIGNMENT = 32  # GGUF's default tensor data alignment
GRID = 20000  # cells of the knapsack's cost grid (the greedy fill spends what rounding leaves)
# The file type llama.cpp records for a mix, after the type holding most of its bytes.
_FILE_TYPE_OF = {
    "Q6_K": "Q6_K", "Q5_K": "Q5_K_M", "Q5_1": "Q5_1", "Q5_0": "Q5_0", "Q4_K": "Q4_K_M",
    "Q4_1": "Q4_1", "IQ4_NL": "IQ4_NL", "Q4_0": "Q4_0", "IQ4_XS": "IQ4_XS", "Q3_K": "Q3_K_M",
    "IQ3_S": "IQ3_S", "IQ3_XXS": "IQ3_XXS", "Q2_K": "Q2_K",
}  # fmt: skip

TensorTypes = list[tuple[str, str]]


@dataclass(frozen=True)
class MixTarget:
    """The budget: a file size in bytes, or bits per weight over every tensor."""

    size: int | None = None
    bpw: float | None = None

    def describe(self) -> str:
        return f"--target-size {self.size:,} bytes" if self.size else f"--target-bpw {self.bpw}"


@dataclass(frozen=True)
class MixPlan:
    """What the planner chose: overrides for llama.cpp and the figures behind them."""

    tensor_types: TensorTypes  # user patterns first, then one exact pattern per matrix
    file_type: str  # the llama.cpp file type the mix is recorded as
    budget_bytes: int
    predicted_bytes: int
    estimated_kl: float  # the sensitivity model's sum, over the base KL
    types_by_group: dict[str, dict[str, int]]
    groups: dict[str, dict[str, float]]  # group -> measured KL and gain

    def summary(self) -> str:
        return (
            f"budget {self.budget_bytes / 1e6:.1f} MB, planned {self.predicted_bytes / 1e6:.1f} "
            f"MB, estimated KL {self.estimated_kl:.4f} over Q8_0's"
        )

    def record(self) -> dict:
        """The report's `mix` section (the overrides themselves are in the file)."""
        return {
            "budget_bytes": self.budget_bytes,
            "predicted_bytes": self.predicted_bytes,
            "estimated_kl": round(self.estimated_kl, 6),
            "file_type": self.file_type,
            "types_by_group": self.types_by_group,
            "sensitivity": self.groups,
        }


def parse_size(text: str, flag: str = "--target-size") -> int:
    """Bytes from `105MB` (10^6), `100MiB` (2^20), `0.1GB`, `98000000`; ConverterError if not."""
    match = _SIZE.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise ConverterError(
            f"{flag} {text!r}: write a size in bytes or with a unit, e.g. 105MB, 100MiB, 0.1GB"
        )
    power = " KMGT".index(match.group(2).upper() or " ")
    if match.group(3) and not power:
        raise ConverterError(f"{flag} {text!r}: 'i' needs a unit letter, e.g. 100MiB")
    base = 1024 if match.group(3) else 1000
    return int(float(match.group(1)) * base**power)


def check_bpw(bpw: float) -> float:
    if not math.isfinite(bpw) or bpw <= 0:
        raise ConverterError(f"--target-bpw {bpw}: give a positive number of bits, e.g. 4.5")
    return bpw


def padded(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def tensor_bytes(matrix: Matrix, type_name: str) -> int:
    return padded(matrix.rows * type_info(type_name).row_bytes(matrix.n_per_row))


@dataclass(frozen=True)
class FileLayout:
    """A float GGUF's bytes that no type choice changes, and its element count."""

    fixed_bytes: int  # metadata, vectors (norms), padding: the file minus its matrices
    n_elements: int  # every tensor's elements (what bits per weight divide by)
    vector_bytes: int  # the 1-D tensors alone


def file_layout(float_path: Path) -> FileLayout:
    reader = gguf.GGUFReader(float_path)
    matrix_bytes = sum(padded(int(t.n_bytes)) for t in reader.tensors if len(t.shape) == 2)
    vectors = sum(padded(int(t.n_bytes)) for t in reader.tensors if len(t.shape) != 2)
    return FileLayout(
        fixed_bytes=float_path.stat().st_size - matrix_bytes,
        n_elements=sum(int(t.n_elements) for t in reader.tensors),
        vector_bytes=vectors,
    )


def budget_for(target: MixTarget, layout: FileLayout) -> int:
    """The budget as a whole-file size in bytes."""
    if target.size is not None:
        return target.size
    tensors = int(check_bpw(target.bpw) * layout.n_elements / 8)
    return tensors + layout.fixed_bytes - layout.vector_bytes


def plan_mix(
    sensitivity: Sensitivity,
    layout: FileLayout,
    target: MixTarget,
    user_types: Sequence[tuple[str, str]] = (),
    allowed: Sequence[str] | None = None,
) -> MixPlan:
    """The least-loss types within the budget; ConverterError when even the smallest is over."""
    budget = budget_for(target, layout)
    fixed, free = _split(sensitivity.matrices, user_types)
    fixed_bytes = layout.fixed_bytes + sum(tensor_bytes(m, t) for m, t in fixed)
    options = [_options(m, sensitivity, allowed) for m in free]
    smallest = fixed_bytes + sum(
        min(tensor_bytes(m, t) for t, _ in o) for m, o in zip(free, options, strict=True)
    )
    if budget < smallest:
        raise ConverterError(
            f"{target.describe()} is below the smallest file this model can make "
            f"({smallest / 1e6:.1f} MB with every matrix at its lowest type); "
            f"give at least {math.ceil(smallest / 1e5) / 10:.1f}MB"
        )
    chosen = _choose(free, options, tensor_bytes, budget - fixed_bytes)
    return _plan(sensitivity, fixed, chosen, user_types, budget, fixed_bytes)


def plan_for_cost(
    sensitivity: Sensitivity,
    layout: FileLayout,
    cost: Callable[[Matrix, str], int],
    capacity: int,
    user_types: Sequence[tuple[str, str]] = (),
    allowed: Sequence[str] | None = None,
) -> MixPlan:
    """The least-loss types whose summed `cost` (e.g. decode time) stays within `capacity`."""
    fixed, free = _split(sensitivity.matrices, user_types)
    fixed_bytes = layout.fixed_bytes + sum(tensor_bytes(m, t) for m, t in fixed)
    options = [_options(m, sensitivity, allowed) for m in free]
    chosen = _choose(free, options, cost, capacity)
    size = fixed_bytes + sum(tensor_bytes(m, t) for m, t in chosen)
    return _plan(sensitivity, fixed, chosen, user_types, size, fixed_bytes)


def _choose(
    free: list[Matrix],
    options: list[list[tuple[str, float]]],
    cost: Callable[[Matrix, str], int],
    capacity: int,
) -> list[tuple[Matrix, str]]:
    items = [
        [(cost(m, t), loss) for t, loss in opts] for m, opts in zip(free, options, strict=True)
    ]
    choice = knapsack(items, capacity)
    return [(m, opts[k][0]) for m, opts, k in zip(free, options, choice, strict=True)]


def _split(
    matrices: list[Matrix], user_types: Sequence[tuple[str, str]]
) -> tuple[list[tuple[Matrix, str]], list[Matrix]]:
    """Matrices a user pattern fixes (first match wins, as in llama.cpp) and the rest."""
    fixed, free = [], []
    for m in matrices:
        hit = next((t for p, t in user_types if re.search(p, m.name)), None)
        if hit is None:
            free.append(m)
        else:
            fixed.append((m, effective_type(hit, m.n_per_row)))
    return fixed, free


def _options(
    matrix: Matrix, sensitivity: Sensitivity, allowed: Sequence[str] | None
) -> list[tuple[str, float]]:
    """(type, estimated loss) for every type this matrix may take."""
    names = [n for n in sensitivity.errors[matrix.name] if allowed is None or n in allowed]
    if not names:  # none of the allowed types fits this row length: keep the measured ones
        names = list(sensitivity.errors[matrix.name])
    return [(n, sensitivity.loss(matrix, n)) for n in names]


def knapsack(items: list[list[tuple[int, float]]], capacity: int) -> list[int]:
    """Per item, the index of the (cost, loss) option that keeps the summed loss least with the
    summed cost at most `capacity`: exact on a grid (costs rounded up, so the bound holds), then
    what the rounding left over is spent greedily on the best loss saved per unit of cost."""
    base = sum(min(c for c, _ in options) for options in items)
    spare = capacity - base  # what may go above every item's cheapest option
    if spare < 0:
        raise ConverterError("no choice of types fits the budget")
    unit = max(1, math.ceil(spare / GRID))
    cells = spare // unit
    best = np.zeros(cells + 1)
    picks = np.zeros((len(items), cells + 1), dtype=np.int16)
    for i, options in enumerate(items):
        floor = min(c for c, _ in options)
        new = np.full(cells + 1, np.inf)
        # cheapest first: of two options with the same loss, the cheaper one is kept
        for k, (cost, loss) in sorted(enumerate(options), key=lambda kv: kv[1][0]):
            w = math.ceil((cost - floor) / unit)
            if w > cells:
                continue
            candidate = np.full(cells + 1, np.inf)
            candidate[w:] = best[: cells + 1 - w] + loss
            better = candidate < new
            new[better] = candidate[better]
            picks[i, better] = k
        best = new
    choice, cell = [], cells
    for i in range(len(items) - 1, -1, -1):
        k = int(picks[i, cell])
        choice.append(k)
        cell -= math.ceil((items[i][k][0] - min(c for c, _ in items[i])) / unit)
    return _fill(items, choice[::-1], capacity)


def _fill(items: list[list[tuple[int, float]]], choice: list[int], capacity: int) -> list[int]:
    """Upgrade items one at a time, best loss saved per unit of cost first, while they fit."""
    left = capacity - sum(items[i][k][0] for i, k in enumerate(choice))
    while True:
        moves = [
            ((items[i][k][1] - loss) / max(cost - items[i][k][0], 1), i, j)
            for i, k in enumerate(choice)
            for j, (cost, loss) in enumerate(items[i])
            if loss < items[i][k][1] and 0 <= cost - items[i][k][0] <= left
        ]
        if not moves:
            return choice
        _, i, j = max(moves)
        left -= items[i][j][0] - items[i][choice[i]][0]
        choice[i] = j


def _plan(
    sensitivity: Sensitivity,
    fixed: list[tuple[Matrix, str]],
    chosen: list[tuple[Matrix, str]],
    user_types: Sequence[tuple[str, str]],
    budget: int,
    fixed_bytes: int,
) -> MixPlan:
    every = fixed + chosen
    by_group: dict[str, Counter] = {}
    bytes_by_type: Counter = Counter()
    for m, t in every:
        by_group.setdefault(m.group, Counter())[t] += 1
        bytes_by_type[t] += tensor_bytes(m, t)
    dominant = next((t for t, _ in bytes_by_type.most_common() if t in _FILE_TYPE_OF), "Q8_0")
    overrides = [(p, t.upper()) for p, t in user_types]
    overrides += [(f"^{re.escape(m.name)}$", t) for m, t in chosen]
    return MixPlan(
        tensor_types=overrides,
        file_type=_FILE_TYPE_OF.get(dominant, "Q8_0"),
        budget_bytes=budget,
        predicted_bytes=fixed_bytes + sum(tensor_bytes(m, t) for m, t in chosen),
        estimated_kl=sum(sensitivity.loss(m, t) for m, t in chosen),
        types_by_group={g: dict(c) for g, c in sorted(by_group.items())},
        groups=sensitivity.to_record(),
    )


class MixPlanner:
    """The write step's planner (converter.write.Planner): measures the float file's
    sensitivity on the calibration text, then plans the mix; `plan` keeps the result."""

    def __init__(
        self,
        target: MixTarget,
        imatrix: dict[str, np.ndarray] | None,
        calibration_text: str,
        user_types: Sequence[tuple[str, str]] = (),
        progress: bool = False,
    ) -> None:
        self.target, self.imatrix, self.text = target, imatrix, calibration_text
        self.user_types, self.progress = list(user_types), progress
        self.plan: MixPlan | None = None

    def __call__(self, float_path: Path) -> tuple[str, TensorTypes]:
        from tqdm import tqdm

        from converter import sensitivity

        layout = file_layout(float_path)
        matrices = sensitivity.matrices_of(float_path)
        has_imatrix = self.imatrix is not None
        check_feasible(matrices, layout, self.target, self.user_types, has_imatrix)
        with tqdm(desc="Measuring sensitivity", unit="step", disable=not self.progress) as bar:
            measured = sensitivity.measure(
                float_path, self.imatrix, self.text, lambda _name: bar.update(1)
            )
        self.plan = plan_mix(measured, layout, self.target, self.user_types)
        return self.plan.file_type, self.plan.tensor_types


def check_feasible(
    matrices: list[Matrix],
    layout: FileLayout,
    target: MixTarget,
    user_types: Sequence[tuple[str, str]] = (),
    has_imatrix: bool = True,
) -> None:
    """Refuse a budget below the smallest file, from tensor shapes alone (no measuring)."""
    from converter.qtypes import candidate_types

    errors = {
        m.name: {t.name: 0.0 for t in candidate_types(m.n_per_row, has_imatrix=has_imatrix)}
        for m in matrices
    }
    shapes_only = Sensitivity(matrices, errors, {}, 0.0, {}, gains={"": 0.0})
    plan_mix(shapes_only, layout, target, user_types)


def check_before_writing(
    specs: Sequence, target: MixTarget, user_types: Sequence[tuple[str, str]] = ()
) -> None:
    """The budget check on the tensor plan (converter.gguf_out.TensorSpec), before calibrating:
    metadata is not counted yet, so this refuses only budgets no file could meet."""
    from converter.sensitivity import group_of

    n_blocks = 1 + max((int(m.group(1)) for s in specs if (m := _BLOCK.match(s.name))), default=0)
    matrices = [
        Matrix(s.name, group_of(s.name, n_blocks), int(s.shape[0]), int(s.shape[1]))
        for s in specs
        if len(s.shape) == 2
    ]
    vectors = sum(padded(4 * int(np.prod(s.shape))) for s in specs if len(s.shape) != 2)
    n_elements = sum(int(np.prod(s.shape)) for s in specs)
    check_feasible(matrices, FileLayout(vectors, n_elements, vectors), target, user_types)
