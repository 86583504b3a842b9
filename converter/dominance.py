"""Does pruning pay? The pruned file against plain types of the unpruned model, measured here.

Pruning costs quality to win speed; a plain quantization of the unpruned model often wins both
(on SmolLM2-135M, IQ4_XS beat every pruned plan: README). After a pruning conversion the
unpruned model is quantized to a few plain types (and to the pruned file's own type) with its
own importance matrix, and every file is measured on the calibration hold-out and for decode
speed here. A rival that decodes faster with lower perplexity dominates the pruned file: the
CLI then warns, and the report keeps the figures either way.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from converter import frontier
from converter.files import temporary_dir
from converter.frontier import Row
from converter.gguf_out import FLOAT_TYPES

if TYPE_CHECKING:
    from converter.write import Prepared

RIVALS = ("Q8_0", "Q4_K_M", "IQ4_XS", "Q4_0")
ROUNDS = 2


@dataclass(frozen=True)
class PruneCheck:
    """The pruned file's figures, its rivals', and which rivals dominate it."""

    rows: list[dict]
    dominated_by: list[str]

    @property
    def message(self) -> str:
        pruned = self.rows[0]
        if not self.dominated_by:
            return (
                f"pruned file on the frontier of {len(self.rows) - 1} plain types of the "
                f"unpruned model (calibration hold-out perplexity {pruned['perplexity']:.3f}, "
                f"decode {pruned['decode_tps']:.1f} tokens/s)"
            )
        rival = next(r for r in self.rows if r["name"] == self.dominated_by[0])
        return (
            f"pruning did not pay: the unpruned model at {rival['name']} decodes faster "
            f"({rival['decode_tps']:.1f} vs {pruned['decode_tps']:.1f} tokens/s) with lower "
            f"perplexity ({rival['perplexity']:.3f} vs {pruned['perplexity']:.3f} on the "
            f"calibration hold-out); also dominated by: {', '.join(self.dominated_by[1:]) or '-'}"
        )

    def record(self) -> dict:
        return {"rows": self.rows, "dominated_by": self.dominated_by, "message": self.message}


def check_pruned(
    pruned: Path,
    quant: str,
    unpruned: "Prepared",
    imatrix: dict[str, np.ndarray] | None,
    calibration_text: str,
) -> PruneCheck:
    """Quantize the unpruned model to the rivals, measure everything, name the dominators."""
    from converter.fastest import measure_holdout
    from converter.quantize import quantize_gguf
    from converter.write import source_float_type, write_float_gguf

    with temporary_dir(pruned.parent, "rivals") as folder:
        float_path = folder / "float.gguf"
        write_float_gguf(unpruned, float_path, source_float_type(unpruned), False, atomic=False)
        rows = [Row(f"pruned {quant}", pruned, "pruned")]
        for rival in dict.fromkeys((quant, *RIVALS)):
            if rival in FLOAT_TYPES:
                continue
            path = folder / f"{rival}.gguf"
            quantize_gguf(float_path, path, rival, imatrix=imatrix)
            rows.append(Row(f"unpruned {rival}", path, "plain"))
        measure_holdout(rows, calibration_text, lambda _name: None)
        prompt = frontier.prompt_ids(pruned, calibration_text)
        frontier.measure_speeds(rows, prompt, rounds=ROUNDS)
        dominated = [r.name for r in rows[1:] if frontier.dominates(r, rows[0])]
        return PruneCheck([r.to_dict() for r in rows], dominated)
