"""Mixed precision by measurement (--target-size / --target-bpw) on a tiny model, for real.

The planner's pieces (size parsing, the knapsack, ggml's rounding errors) are checked against
plain arithmetic; then whole conversions of a tiny llama: the file fits the budget (the byte
count llama.cpp wrote, not the estimate), a larger budget buys a lower estimated loss,
`--tensor-type` still wins, and the report records the plan. Bad budgets go through the CLI:
exit 2, one line, nothing written.
"""

import itertools
import json

import numpy as np
import pytest

from converter.errors import ConverterError
from converter.info import tensor_types_by_name
from converter.mix import MixTarget, knapsack, parse_size
from converter.options import ConvertOptions, QuantizeOptions
from converter.pipeline import convert
from converter.qtypes import candidate_types, roundtrip, weighted_error
from tests.converter.test_bad_input import assert_one_line_error, no_outputs, run_cli
from tests.tiny_models import tiny_model

TINY = "llama-spm"  # tied embeddings, hidden 64: every matrix takes the 32-value block types


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("105MB", 105_000_000),
        ("100MiB", 100 * 2**20),
        ("0.1GB", 100_000_000),
        ("98000000", 98_000_000),
        ("1.5 kB", 1500),
        ("2GiB", 2 * 2**30),
        ("105mb", 105_000_000),
    ],
)
def test_sizes_parse(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["abc", "-5MB", "0", "10XB", "MB", "1e9", "5iB", ""])
def test_bad_sizes_are_refused(text):
    with pytest.raises(ConverterError, match="--target-size"):
        parse_size(text)


def test_knapsack_matches_brute_force():
    rng = np.random.default_rng(1)
    items = [
        [
            (int(c), float(loss))
            for c, loss in zip(rng.integers(10, 200, 4), rng.random(4), strict=True)
        ]
        for _ in range(6)
    ]
    for capacity in (100, 300, 600, 1000):
        combos = [
            combo
            for combo in itertools.product(*(range(len(o)) for o in items))
            if sum(items[i][k][0] for i, k in enumerate(combo)) <= capacity
        ]
        if not combos:
            continue
        loss = lambda combo: sum(items[i][k][1] for i, k in enumerate(combo))  # noqa: E731
        best = min(combos, key=loss)
        chosen = knapsack(items, capacity)
        assert sum(items[i][k][0] for i, k in enumerate(chosen)) <= capacity
        assert loss(chosen) == pytest.approx(loss(best))


def test_ggml_rounding_errors_shrink_with_more_bits():
    rng = np.random.default_rng(0)
    weights = rng.normal(0, 0.05, (64, 256)).astype(np.float32)
    importance = rng.uniform(0.5, 2.0, 256).astype(np.float32)
    back = roundtrip(weights, "Q8_0", importance)
    assert np.abs(back - weights).max() < 0.002  # Q8_0 reads back almost exactly
    errors = {
        t.name: weighted_error(weights, t.name, importance)
        for t in candidate_types(256, has_imatrix=True)
    }
    assert errors["F16"] < errors["Q8_0"] < errors["Q6_K"] < errors["Q4_K"] < errors["Q2_K"]
    assert errors["Q4_0"] > errors["Q5_0"]
    assert "Q4_K" not in {t.name for t in candidate_types(576, has_imatrix=True)}  # 576 % 256


def _convert(tmp_path, name: str, **options):
    out = tmp_path / f"{name}.gguf"
    report = tmp_path / f"{name}.json"
    result = convert(str(tiny_model(TINY)), out, ConvertOptions(report_path=report, **options))
    return result, json.loads(report.read_text())


@pytest.fixture(scope="module")
def extremes(tmp_path_factory):
    """Sizes of the tiny model at Q8_0 and at Q4_0 (every matrix), the range a mix spans."""
    folder = tmp_path_factory.mktemp("extremes")
    sizes = {}
    for quant in ("Q8_0", "Q4_0"):
        out = folder / f"{quant}.gguf"
        types = QuantizeOptions(tensor_types=((".", quant),))
        convert(str(tiny_model(TINY)), out, ConvertOptions(quant=quant, quantize=types))
        sizes[quant] = out.stat().st_size
    return sizes


def test_mix_fits_the_budget_and_spends_it(tmp_path, extremes):
    low, high = extremes["Q4_0"], extremes["Q8_0"]
    budgets = [low + (high - low) // 4, low + 3 * (high - low) // 4]
    kls = []
    for budget in budgets:
        result, report = _convert(tmp_path, f"mix{budget}", mix=MixTarget(size=budget))
        size = result.output.stat().st_size
        assert size <= budget
        assert size >= budget - (high - low) // 10  # the budget is spent, not wasted
        mix = report["extra"]["mix"]
        assert mix["budget_bytes"] == budget and mix["predicted_bytes"] == size
        assert report["quant"].startswith("mix")
        assert set(mix["sensitivity"]) >= {"token_embd", "ffn_down@0", "attn_q@1"}
        kls.append(mix["estimated_kl"])
        types = set(tensor_types_by_name(result.output).values()) - {"F32"}
        assert len(types) >= 2  # a mix, not one type
    assert kls[1] < kls[0]


def test_target_bpw_and_tensor_type_override(tmp_path, extremes):
    user = QuantizeOptions(tensor_types=(("token_embd", "Q4_0"),))
    result, report = _convert(tmp_path, "bpw", mix=MixTarget(bpw=7.0), quantize=user)
    types = tensor_types_by_name(result.output)
    assert types["token_embd.weight"] == "Q4_0"  # the user's pattern wins over the plan
    assert report["extra"]["mix"]["types_by_group"]["token_embd"] == {"Q4_0": 1}
    from gguf import GGUFReader

    tensors = GGUFReader(result.output).tensors
    bits = 8 * sum(int(t.n_bytes) for t in tensors) / sum(int(t.n_elements) for t in tensors)
    assert 6.0 < bits <= 7.0


def test_budget_below_the_smallest_file_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli(tiny_model(TINY), "-o", out / "m.gguf", "--target-size", "20kB")
    assert_one_line_error(result, "--target-size", "below the smallest file")
    assert no_outputs(out)


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--target-size", "lots"], ["--target-size", "105MB"]),
        (["--target-size=-3MB"], ["--target-size"]),
        (["--target-bpw", "0"], ["--target-bpw", "positive"]),
        (["--target-bpw", "x"], ["--target-bpw", "number"]),
        (["--target-size", "1MB", "--target-bpw", "4"], ["not both"]),
        (["--fastest-within", "0"], ["--fastest-within", "positive"]),
        (["--fastest-within", "-5"], ["--fastest-within", "positive"]),
        (["--fastest-within", "nan"], ["--fastest-within", "positive"]),
        (["--fastest-within", "five"], ["--fastest-within", "number"]),
        (["--fastest-within", "5", "--target-size", "1MB"], ["--fastest-within"]),
    ],
)
def test_bad_choice_flags(tmp_path, flags, words):
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli(tiny_model(TINY), "-o", out / "m.gguf", *flags)
    assert_one_line_error(result, *words)
    assert no_outputs(out)
