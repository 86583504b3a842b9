"""The conversion report: a JSON file for machines and a short table for people."""

import json
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converter.errors import OutputError
from converter.files import atomic_output
from converter.timings import Timings  # noqa: F401  (re-exported: the report's steps)

if TYPE_CHECKING:
    from converter.dominance import PruneCheck
    from converter.evaluate import EvalResult
    from converter.fastest import FastestChoice
    from converter.mix import MixPlan
    from converter.offload import OffloadPlan
    from converter.optimize.prune import LayerPlan
    from converter.vocab import VocabSummary

_BLOCK = re.compile(r"^blk\.\d+\.")


@dataclass(frozen=True)
class Change:
    """A count before and after a step (parameters, block parameters)."""

    before: int
    after: int


@dataclass(frozen=True)
class HealRecord:
    """The distillation after pruning: steps and the KL divergence at its start and end."""

    steps: int
    kl_first: float
    kl_last: float


@dataclass(frozen=True)
class Pruning:
    """What pruning removed: the plan per block of the unpruned model, and healing."""

    plan: list["LayerPlan"]
    block_parameters: Change
    heal: HealRecord | None


@dataclass(frozen=True)
class Optimization:
    """What the torch steps (converter.optimize) did."""

    calibration_tokens: int
    imatrix: bool  # the quantizer was given an importance matrix
    pruning: Pruning | None


@dataclass(frozen=True)
class Evaluation:
    """Perplexity and decode speed of the unpruned and the written model, same quantization."""

    before: "EvalResult"
    after: "EvalResult"


@dataclass(frozen=True)
class Report:
    """Everything a conversion learned, built once from what its steps returned."""

    source: str
    architecture: str
    gguf_architecture: str
    output: str
    quant: str
    tensor_count: int
    parameter_count: int
    types_by_kind: dict[str, dict[str, int]]
    sizes: dict[str, int]
    timings_s: dict[str, float]
    vocab: "VocabSummary"
    offload: "OffloadPlan | None" = None
    optimization: Optimization | None = None
    parameters: Change | None = None  # the whole model's, when the torch steps ran
    evaluation: Evaluation | None = None
    mix: "MixPlan | None" = None  # --target-size / --target-bpw
    fastest: "FastestChoice | None" = None  # --fastest-within
    prune_check: "PruneCheck | None" = None  # pruned file against plain unpruned types

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout: the table's fields, then the steps' sections under "extra"."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _SECTIONS}
        return {**data, "extra": self._sections()}

    def _sections(self) -> dict[str, Any]:
        sections: dict[str, Any] = {"vocab": asdict(self.vocab)}
        if self.offload is not None:
            sections["offload"] = {"summary": self.offload.summary, **self.offload.to_dict()}
        opt = self.optimization
        if opt is not None:
            section: dict[str, Any] = {"calibration_tokens": opt.calibration_tokens}
            if opt.pruning is not None:
                section |= {k: v for k, v in asdict(opt.pruning).items() if v is not None}
            sections |= {"optimize": section, "imatrix": opt.imatrix}
        if self.parameters is not None:
            sections["parameters"] = asdict(self.parameters)
        if self.evaluation is not None:
            sections["evaluation"] = asdict(self.evaluation)
        if self.mix is not None:
            sections["mix"] = self.mix.record()
        if self.fastest is not None:
            sections["fastest"] = self.fastest.record()
        if self.prune_check is not None:
            sections["prune_check"] = self.prune_check.record()
        return sections

    def write_json(self, path: Path) -> None:
        """Write atomically, so a reader never sees half a report."""
        if not path.parent.is_dir():
            raise OutputError(f"cannot write the report: folder {path.parent} does not exist")
        with atomic_output(path) as temp:
            temp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def format_table(self) -> str:
        """A few aligned lines: sizes, types per tensor kind, timings, then what changed."""
        mb = {key: f"{value / 1e6:.1f} MB" for key, value in self.sizes.items()}
        lines = [
            f"{self.source} ({self.architecture}) -> {self.output} [{self.quant}]",
            f"  tensors {self.tensor_count}, parameters {self.parameter_count:,}",
            "  sizes: " + ", ".join(f"{key} {value}" for key, value in mb.items()),
            "  tensor kind            types",
        ]
        for kind, types in self.types_by_kind.items():
            counts = ", ".join(f"{name} x{count}" for name, count in types.items())
            lines.append(f"  {kind:<22} {counts}")
        lines.append("  time: " + ", ".join(f"{k} {v:.2f}s" for k, v in self.timings_s.items()))
        return "\n".join(lines + self._changes())

    def _changes(self) -> list[str]:
        """Before/after lines: parameters, importance matrix, perplexity and speed, offload."""
        lines = []
        if self.parameters is not None:
            lines.append(f"  parameters {self.parameters.before:,} -> {self.parameters.after:,}")
        pruning = self.optimization.pruning if self.optimization else None
        if pruning is not None:
            blocks = pruning.block_parameters
            lines.append(f"  block parameters {blocks.before:,} -> {blocks.after:,}")
        imatrix = self.optimization is not None and self.optimization.imatrix
        lines.append(f"  importance matrix: {'yes' if imatrix else 'no'}")
        if self.evaluation is not None:
            for when in ("before", "after"):
                e = getattr(self.evaluation, when)
                lines.append(
                    f"  {when:<6} size {e.file_bytes / 1e6:.1f} MB, perplexity "
                    f"{e.perplexity.value:.3f}, decode {e.tokens_per_s:.1f} tokens/s"
                )
        if self.offload is not None:
            lines.append(f"  offload plan: {self.offload.summary}")
        if self.mix is not None:
            lines.append(f"  mix: {self.mix.summary()}")
        if self.fastest is not None:
            lines += ["  candidates (* on the frontier):", self.fastest.table]
            lines.append(f"  fastest: {self.fastest.reason}")
        if self.prune_check is not None:
            lines.append(f"  pruning: {self.prune_check.message}")
        return lines


_SECTIONS = frozenset(
    {"vocab", "offload", "optimization", "parameters", "evaluation", "mix", "fastest"}
    | {"prune_check"}
)


def tensor_kind(name: str) -> str:
    """`blk.3.attn_q.weight` -> `attn_q.weight`: what a tensor is, whatever its block."""
    return _BLOCK.sub("", name)


def types_by_kind(types_by_name: dict[str, str]) -> dict[str, dict[str, int]]:
    """How many tensors of each kind got each type (Q4_K_M mixes Q4_K and Q6_K, for one)."""
    table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for name, type_name in types_by_name.items():
        table[tensor_kind(name)][type_name] += 1
    return {kind: dict(types) for kind, types in sorted(table.items())}
