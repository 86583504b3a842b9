"""The chatbot applies the GGUF's offload plan, flags override it, a CPU build says so."""

from pathlib import Path

import gguf
import llama_cpp
import pytest

from chatbot.engines.offload import read_header_values, read_plan, resolve_offload
from chatbot.errors import ModelLoadError
from converter.offload import parse_size, plan_file, write_plan_metadata
from tests.tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> Path:
    """A tiny 4-block model with a plan for all 5 layers (4 blocks + output) stored."""
    folder = tmp_path_factory.mktemp("planned")
    bare = write_tiny_gguf(folder / "bare.gguf")
    path = folder / "planned.gguf"
    write_plan_metadata(bare, path, plan_file(bare, parse_size("8GiB"), 2048))
    return path


def test_header_scan_agrees_with_gguf_reader(planned):
    reader = gguf.GGUFReader(planned)
    expected = {
        f.name: f.contents()
        for f in reader.fields.values()
        if f.types[0] != gguf.GGUFValueType.ARRAY and not f.name.startswith("GGUF.")
    }
    values = read_header_values(planned)
    assert values.keys() == expected.keys()
    for key, value in expected.items():
        assert values[key] == pytest.approx(value), key


@pytest.mark.slow
def test_header_scan_of_a_real_model_with_token_arrays(smollm2_gguf):
    values = read_header_values(smollm2_gguf("Q4_K_M"))
    assert values["general.architecture"] == "llama" and values["llama.block_count"] == 30
    assert "tokenizer.ggml.tokens" not in values  # arrays are skipped, not misread


def test_not_a_gguf(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"GGML" + b"\0" * 64)
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        read_header_values(path)
    truncated = tmp_path / "t.gguf"
    truncated.write_bytes(Path(write_tiny_gguf(tmp_path / "full.gguf")).read_bytes()[:40])
    with pytest.raises(ModelLoadError, match="cannot read the GGUF header"):
        read_header_values(truncated)


def test_gpu_build_applies_the_plan(planned):
    settings = resolve_offload(planned, gpu_build=True)
    assert (settings.n_gpu_layers, settings.offload_kqv, settings.flash_attn) == (5, True, True)
    assert settings.source == "plan" and settings.planned_ctx == 2048
    assert settings.description == "GPU: 5/5 layers, flash attention"


def test_flags_override_the_plan(planned):
    settings = resolve_offload(planned, gpu_layers=2, flash_attn=False, gpu_build=True)
    assert (settings.n_gpu_layers, settings.flash_attn, settings.source) == (2, False, "flags")
    assert settings.description == "GPU: 2/5 layers"
    assert resolve_offload(planned, gpu_layers=-1, gpu_build=True).description.startswith(
        "GPU: 5/5"
    )


def test_cpu_only_build_says_so_and_offloads_nothing(planned, tmp_path):
    settings = resolve_offload(planned, gpu_build=False)
    assert settings.n_gpu_layers == 0 and not settings.flash_attn
    assert settings.description == "CPU only build: plan of 5 GPU layers not applied"
    flags = resolve_offload(planned, gpu_layers=3, flash_attn=True, gpu_build=False)
    assert flags.description == "CPU only build: --gpu-layers of 3 GPU layers not applied"
    assert flags.flash_attn  # flash attention runs on the CPU too, when asked for
    bare = resolve_offload(write_tiny_gguf(tmp_path / "bare.gguf"), gpu_build=False)
    assert (bare.description, bare.source) == ("CPU only build", "default")
    assert read_plan(tmp_path / "bare.gguf") is None


def test_this_build_is_detected(planned):
    settings = resolve_offload(planned)
    assert settings.gpu_build == llama_cpp.llama_supports_gpu_offload()
    if not settings.gpu_build:
        assert settings.n_gpu_layers == 0 and settings.description.startswith("CPU only build")


def test_unreadable_file_leaves_the_error_to_the_loader(tmp_path):
    settings = resolve_offload(tmp_path / "missing.gguf", gpu_build=False)
    assert settings.n_gpu_layers == 0 and settings.total_layers is None


def test_chatbot_flags_parse():
    from chatbot.cli.commands import build_parser

    args = build_parser().parse_args(["ask", "hi", "--gpu-layers", "3", "--no-flash-attn"])
    assert (args.gpu_layers, args.flash_attn) == (3, False)
    args = build_parser().parse_args(["--flash-attn", "ask", "hi"])
    assert (args.gpu_layers, args.flash_attn) == (None, True)


@pytest.mark.slow
def test_embedded_engine_reports_the_settings_in_effect(smollm2_gguf, tmp_path):
    from chatbot.engines.llama import LlamaEngine

    path = tmp_path / "planned.gguf"
    source = smollm2_gguf("Q4_K_M")
    write_plan_metadata(source, path, plan_file(source, parse_size("8GiB"), 1024))
    engine = LlamaEngine(path, n_ctx=512, n_threads=1, offload=resolve_offload(path))
    try:
        info = engine.info
    finally:
        engine.close()
    if llama_cpp.llama_supports_gpu_offload():
        assert info.backend == "llama.cpp (GPU: 31/31 layers, flash attention)"
    else:
        assert info.backend == "llama.cpp (CPU only build: plan of 31 GPU layers not applied)"
        assert info.settings == {"n_gpu_layers": 0, "offload_kqv": True, "flash_attn": False}
