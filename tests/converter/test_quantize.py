"""llama.cpp's quantizer through ctypes: type table, tensor-type overrides, importance matrix."""

from pathlib import Path

import gguf
import numpy as np
import pytest

from converter.errors import QuantizationError
from converter.info import tensor_types_by_name
from converter.optimize.calibrate import spread
from converter.options import ConvertOptions
from converter.pipeline import convert
from converter.quantize import QUANT_TYPES, check_quant, quantize_gguf
from tests.tiny_models import tiny_model


@pytest.fixture(scope="module")
def f32_gguf(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("q") / "tiny-f32.gguf"
    convert(str(tiny_model("qwen3")), out, ConvertOptions(quant="F32"))
    return out


def _imatrix(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A positive value per input column of every matrix (what calibration would measure)."""
    rng = np.random.default_rng(seed)
    return {
        t.name: rng.uniform(0.1, 10.0, int(t.shape[0])).astype(np.float32)
        for t in gguf.GGUFReader(path).tensors
        if len(t.shape) == 2
    }


def test_type_names_are_case_insensitive_and_checked():
    assert check_quant("q4_k_m") == "Q4_K_M"
    assert check_quant("f16") == "F16"
    with pytest.raises(QuantizationError, match="unknown quantization type 'Q9'"):
        check_quant("Q9")
    with pytest.raises(QuantizationError, match="importance matrix"):
        check_quant("IQ2_XXS")


def test_tensor_type_overrides(f32_gguf, tmp_path):
    out = tmp_path / "mixed.gguf"
    quantize_gguf(f32_gguf, out, "Q4_0", tensor_types=[(r"attn_v\.weight", "Q8_0")])
    types = tensor_types_by_name(out)
    assert types["blk.0.attn_v.weight"] == types["blk.1.attn_v.weight"] == "Q8_0"
    assert types["blk.0.attn_q.weight"] == "Q4_0"


def test_bad_override_is_refused_before_quantizing(f32_gguf, tmp_path):
    out = tmp_path / "bad.gguf"
    with pytest.raises(QuantizationError, match="unknown tensor type 'Q7'"):
        quantize_gguf(f32_gguf, out, "Q4_0", tensor_types=[("attn_v", "Q7")])
    with pytest.raises(QuantizationError, match="bad tensor-type pattern"):
        quantize_gguf(f32_gguf, out, "Q4_0", tensor_types=[("attn_v(", "Q8_0")])
    assert not out.exists()


def test_imatrix_changes_the_quantization(f32_gguf, tmp_path):
    plain, guided = tmp_path / "plain.gguf", tmp_path / "guided.gguf"
    quantize_gguf(f32_gguf, plain, "Q4_0")
    quantize_gguf(f32_gguf, guided, "Q4_0", imatrix=_imatrix(f32_gguf))
    name = "blk.0.ffn_down.weight"
    a = {t.name: bytes(t.data) for t in gguf.GGUFReader(plain).tensors}
    b = {t.name: bytes(t.data) for t in gguf.GGUFReader(guided).tensors}
    assert len(a[name]) == len(b[name]) and a[name] != b[name]


def test_imatrix_enables_types_that_need_it(f32_gguf, tmp_path):
    out = tmp_path / "iq2.gguf"
    quantize_gguf(f32_gguf, out, "IQ2_XS", imatrix=_imatrix(f32_gguf))
    assert out.stat().st_size < f32_gguf.stat().st_size / 4


def test_wrong_imatrix_size_is_a_clear_error(f32_gguf, tmp_path):
    imatrix = _imatrix(f32_gguf)
    imatrix["blk.0.attn_q.weight"] = imatrix["blk.0.attn_q.weight"][:10]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(QuantizationError, match="imatrix size 10 is different"):
        quantize_gguf(f32_gguf, out_dir / "bad.gguf", "Q4_K_M", imatrix=imatrix)
    assert list(out_dir.iterdir()) == []


def test_non_finite_imatrix_is_refused(f32_gguf, tmp_path):
    imatrix = _imatrix(f32_gguf)
    imatrix["blk.0.attn_q.weight"][0] = np.nan
    with pytest.raises(QuantizationError, match="NaN"):
        quantize_gguf(f32_gguf, tmp_path / "bad.gguf", "Q4_0", imatrix=imatrix)


def test_every_listed_type_is_a_llama_ftype():
    assert {
        gguf.LlamaFileType(value).name.removeprefix("MOSTLY_") for value in QUANT_TYPES.values()
    } == set(QUANT_TYPES)


def test_quantizing_alone_reads_windows_spread_over_the_whole_text():
    windows = list(range(104))  # 53k tokens of 512-token windows
    chosen = spread(windows, 24)
    assert len(chosen) == 24 and chosen == sorted(set(chosen))
    gaps = [b - a for a, b in zip(chosen, chosen[1:], strict=False)]
    assert chosen[0] == 0 and max(gaps) <= 5 and chosen[-1] >= 104 - 5  # no file is skipped
    assert spread(windows[:10], 24) == windows[:10]
