"""`--fastest-within PCT`: build candidates, measure them here, write the fastest good enough.

The candidates, all quantized from one float GGUF with the importance matrix:
- plain llama.cpp types (Q8_0 ... Q3_K_M);
- pure files (every matrix one type: Q5_1, Q5_0, Q4_1, IQ4_NL, Q4_0), whose decode speed on this
  machine prices each type per weight;
- size mixes (converter.mix) at each plain type's file size: least estimated loss for the bytes;
- speed mixes: least estimated loss for a decode-time budget priced by the pure files, at a few
  budgets between the fastest type and Q8_0.
Each is measured on a calibration hold-out (never data/eval) and for speed on this machine; the
fastest whose perplexity is within PCT% of F16's is copied to the output, and the report keeps
every candidate's figures and why the choice fell where it did.
"""

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from converter import evaluate, frontier
from converter.files import atomic_output, temporary_dir
from converter.frontier import Row
from converter.timings import Timings

if TYPE_CHECKING:
    from converter.options import ConvertOptions
    from converter.sensitivity import Sensitivity
    from converter.write import Prepared, Written

PLAIN = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q4_0", "Q3_K_M")
PURE = ("Q5_1", "Q5_0", "Q4_1", "IQ4_NL", "Q4_0")
SIZE_MIXES = ("Q5_K_M", "Q4_K_M", "Q3_K_M")  # a mix at each of these files' size
SPEED_BUDGETS = (0.1, 0.2, 0.3, 0.35, 0.4, 0.45)  # decode-time budgets: 0 fastest type, 1 Q8_0
HOLDOUT_WINDOWS = 8
HOLDOUT_CTX = 512

Tick = Callable[[str], None]


@dataclass(frozen=True)
class FastestChoice:
    """What `--fastest-within` saw and chose."""

    within_pct: float
    reference_perplexity: float  # F16's, on the calibration hold-out
    limit: float
    chosen: str
    reason: str
    candidates: list[dict]
    table: str

    def record(self) -> dict:
        return {
            "within_pct": self.within_pct,
            "reference": "F16",
            "reference_perplexity": round(self.reference_perplexity, 4),
            "perplexity_limit": round(self.limit, 4),
            "chosen": self.chosen,
            "reason": self.reason,
            "measured_on": "calibration hold-out (perplexity), this machine (speed)",
            "candidates": self.candidates,
        }


def choose(rows: list[Row], pct: float) -> tuple[Row, FastestChoice]:
    """The fastest row within `pct`% of the first row's (F16's) perplexity, and why."""
    frontier.mark_frontier(rows)
    ref = rows[0]
    limit = ref.perplexity * (1 + pct / 100)
    within = [r for r in rows if r.perplexity <= limit]
    best = max(within, key=_decode)
    faster = sorted((r for r in rows if _decode(r) > _decode(best)), key=_decode, reverse=True)
    reason = (
        f"{best.name}: decode {_decode(best):.1f} tokens/s ({_decode(best) / _decode(ref):.2f}x "
        f"F16), perplexity {best.perplexity:.3f} <= {limit:.3f} (F16 {ref.perplexity:.3f} "
        f"+ {pct:g}%) on the calibration hold-out"
    )
    if faster:
        over = ", ".join(f"{r.name} {r.perplexity:.3f}" for r in faster[:3])
        reason += f"; faster files were over the limit ({over})"
    table = frontier.format_table(rows, ref)
    record = FastestChoice(
        pct, ref.perplexity, limit, best.name, reason, [r.to_dict() for r in rows], table
    )
    return best, record


def _decode(row: Row) -> float:
    return row.speed.decode_tps if row.speed else 0.0


def write_fastest(
    prepared: "Prepared",
    output: Path,
    imatrix: dict[str, np.ndarray] | None,
    options: "ConvertOptions",
    timings: Timings,
) -> tuple["Written", FastestChoice]:
    """Build and measure the candidates in a temporary folder, copy the chosen one to `output`."""
    from tqdm import tqdm

    from converter.optimize.calibrate import read_calibration_text
    from converter.write import Written, source_float_type, write_float_gguf

    text = read_calibration_text(options.optimize.calibration)
    assert options.fastest_within is not None
    with temporary_dir(output.parent, "fastest") as folder:
        with timings.step("write"):
            float_type = source_float_type(prepared)
            float_path = folder / f"{float_type}.gguf"
            vocab = write_float_gguf(prepared, float_path, float_type, False, atomic=False)
            f16 = float_path if float_type == "F16" else folder / "F16.gguf"
            if f16 != float_path:
                write_float_gguf(prepared, f16, "F16", False, atomic=False)
        build = Builder(float_path, folder, imatrix, options.quantize.tensor_types)
        with tqdm(desc="Choosing", unit="step", disable=not options.show_progress) as bar:
            rows = build.all(f16, text, lambda _name: bar.update(1), timings)
        best, record = choose(rows, options.fastest_within)
        with atomic_output(output) as temp:
            shutil.copyfile(best.path, temp)
        float_bytes = float_path.stat().st_size
    return Written(prepared, vocab, float_bytes), record


class Builder:
    """Makes and measures the candidates from one float GGUF, in `folder`."""

    def __init__(
        self,
        float_path: Path,
        folder: Path,
        imatrix: dict[str, np.ndarray] | None,
        user_types=(),
        threads: int = 0,
    ) -> None:
        self.float_path, self.folder, self.imatrix = float_path, folder, imatrix
        self.user_types = list(user_types)
        self.threads = threads

    def quantize(self, name: str, quant: str, tensor_types=()) -> Path:
        """The file of `name`, made unless the folder has it. The name carries a digest of the
        types, so a reused folder (the bench's cache) never serves a mix planned differently."""
        from converter.quantize import quantize_gguf

        types = self.user_types + list(tensor_types)
        digest = hashlib.sha256(repr((quant, types)).encode()).hexdigest()[:10]
        path = self.folder / f"{name.replace(' ', '_').replace('/', '-')}-{digest}.gguf"
        if not path.exists():
            quantize_gguf(self.float_path, path, quant, imatrix=self.imatrix, tensor_types=types)
        return path

    def plain(self, tick: Tick) -> list[Row]:
        rows = []
        for quant in PLAIN:
            rows.append(Row(quant, self.quantize(quant, quant), "plain"))
            tick(quant)
        for quant in PURE:
            name = f"{quant} (all)"
            rows.append(Row(name, self.quantize(name, quant, [(".", quant)]), "pure"))
            tick(name)
        return rows

    def sensitivity(self, text: str, tick: Tick) -> "Sensitivity":
        from converter import sensitivity

        return sensitivity.measure(self.float_path, self.imatrix, text, tick)

    def size_mixes(self, sens: "Sensitivity", sizes: dict[str, int], tick: Tick) -> list[Row]:
        """A mix at each plain type's size (the same bytes, spent where they matter most)."""
        from converter.mix import MixTarget, file_layout, plan_mix

        layout = file_layout(self.float_path)
        rows = []
        for quant, size in sizes.items():
            plan = plan_mix(sens, layout, MixTarget(size=size), self.user_types)
            name = f"mix @ {quant} size"
            path = self.quantize(name, plan.file_type, plan.tensor_types)
            rows.append(Row(name, path, "mix", extra={"plan": plan}))
            tick(name)
        return rows

    def speed_mixes(self, sens: "Sensitivity", pure: list[Row], tick: Tick) -> list[Row]:
        """Mixes for decode-time budgets, each type priced by its pure file's speed here."""
        from converter.mix import file_layout, plan_for_cost

        seconds = {r.name.split()[0]: 1.0 / r.speed.decode_tps for r in pure if r.speed}
        total = sum(m.n_elements for m in sens.matrices)
        ns_per = {t: s * 1e9 / total for t, s in seconds.items()}  # per weight, whole model

        def cost(matrix, type_name: str) -> int:
            return int(np.ceil(matrix.n_elements * ns_per[type_name]))

        low, high = min(seconds.values()), seconds["Q8_0"]
        layout = file_layout(self.float_path)
        rows = []
        for share in SPEED_BUDGETS:
            capacity = int((low + share * (high - low)) * 1e9)
            plan = plan_for_cost(sens, layout, cost, capacity, self.user_types, list(seconds))
            name = f"speed mix {share:.0%}"
            path = self.quantize(name, plan.file_type, plan.tensor_types)
            rows.append(Row(name, path, "mix", extra={"plan": plan}))
            tick(name)
        return rows

    def all(self, f16: Path, text: str, tick: Tick, timings: Timings) -> list[Row]:
        """Every candidate, measured: hold-out perplexity, speed (F16 first, the reference)."""
        reference = Row("F16", f16, "float")
        with timings.step("candidates"):
            rows = [reference, *self.plain(tick)]
        prompt = frontier.prompt_ids(f16, text)
        pricing = [r for r in rows if r.kind == "pure" or r.name == "Q8_0"]
        with timings.step("speed"):
            frontier.measure_speeds(pricing, prompt, rounds=1, threads=self.threads, tick=tick)
        with timings.step("sensitivity"):
            sens = self.sensitivity(text, tick)
        with timings.step("mixes"):
            sizes = {r.name: r.file_bytes for r in rows if r.name in SIZE_MIXES}
            rows += self.size_mixes(sens, sizes, tick)
            rows += self.speed_mixes(sens, pricing, tick)
        with timings.step("measure"):
            measure_holdout(rows, text, tick)
            frontier.measure_speeds(rows, prompt, threads=self.threads, tick=tick)
        return rows


def measure_holdout(rows: list[Row], text: str, tick: Tick) -> None:
    """Perplexity of every row on the calibration hold-out windows (not data/eval)."""
    from converter.sensitivity import calibration_slice

    tokens = evaluate.tokenize_gguf(rows[0].path, text)
    windows = calibration_slice(tokens, HOLDOUT_WINDOWS, HOLDOUT_CTX, part=1)
    holdout = evaluate.TokenizedText([i for w in windows for i in w], None)
    for row in rows:
        row.perplexity = evaluate.gguf_perplexity(row.path, holdout, HOLDOUT_CTX).value
        tick(row.name)
