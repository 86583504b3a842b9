"""The conversion report: a JSON file for machines and a short table for people."""

import json
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from converter.errors import OutputError
from converter.gguf_out import atomic_output

_BLOCK = re.compile(r"^blk\.\d+\.")


class Timings(dict[str, float]):
    """Seconds per named step, in the order the steps ran."""

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = round(self.get(name, 0.0) + time.perf_counter() - start, 3)


@dataclass
class Report:
    """Everything a conversion learned; sections other steps add go into `extra`."""

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
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write_json(self, path: Path) -> None:
        """Write atomically, so a reader never sees half a report."""
        if not path.parent.is_dir():
            raise OutputError(f"cannot write the report: folder {path.parent} does not exist")
        with atomic_output(path) as temp:
            temp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def format_table(self) -> str:
        """A few aligned lines: sizes, types per tensor kind, timings."""
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
        return "\n".join(lines)


def tensor_kind(name: str) -> str:
    """`blk.3.attn_q.weight` -> `attn_q.weight`: what a tensor is, whatever its block."""
    return _BLOCK.sub("", name)


def types_by_kind(types_by_name: dict[str, str]) -> dict[str, dict[str, int]]:
    """How many tensors of each kind got each type (Q4_K_M mixes Q4_K and Q6_K, for one)."""
    table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for name, type_name in types_by_name.items():
        table[tensor_kind(name)][type_name] += 1
    return {kind: dict(types) for kind, types in sorted(table.items())}
