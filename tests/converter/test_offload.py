"""The offload plan's byte figures agree with what llama.cpp allocates, and the plan fits.

llama.cpp reports its buffers when it loads a model ("CPU_Mapped model buffer size = X MiB",
"CPU KV buffer size = X MiB", "CPU compute buffer size = X MiB"); the weights compare with the
mapped model buffer (the file's tensors), not the CPU_REPACK buffer, a CPU-only second copy of
some K-quant tensors in a faster layout that GPU offload does not involve. The loads run in a child
process that captures that log with llama_cpp.llama_log_set, so this process's own log routing
(the chatbot's) is untouched. Tiny GGUFs are written here with gguf.GGUFWriter: a llama with an
untied output matrix, and a `deci` model with per-layer head and FFN counts (tests/tiny_gguf.py).
"""

import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from chatbot.engines.offload import read_header_values, read_plan
from converter.cli import commands as cli
from converter.errors import ConverterError
from converter.offload import (
    ModelFigures,
    format_plan,
    gpu_bytes,
    parse_size,
    plan_file,
    plan_offload,
    read_figures,
    usable_bytes,
    write_plan_metadata,
)
from tests.tiny_gguf import write_tiny_gguf

MiB = 2**20
TOLERANCE = 0.05  # the bar for weights and KV cache
# The compute buffer is an estimate of llama.cpp's graph allocator: within 15% on SmolLM2, and
# within a few MiB on tiny models, whose small graph tensors it does not model.
COMPUTE_TOLERANCE = 0.15
COMPUTE_SLACK_MIB = 3.0

MEASURE = r"""
import ctypes, json, re, sys
import llama_cpp

lines = []

@llama_cpp.llama_log_callback
def collect(level, text, user_data):
    lines.append(text.decode("utf-8", "replace"))

llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
path, n_ctx, flash = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
model_params = llama_cpp.llama_model_default_params()
model_params.n_gpu_layers = 0
model = llama_cpp.llama_model_load_from_file(path.encode(), model_params)
assert model, "".join(lines)[-2000:]
params = llama_cpp.llama_context_default_params()
params.n_ctx, params.n_batch, params.n_ubatch, params.n_threads = n_ctx, 512, 512, 1
params.flash_attn_type = (
    llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
)
ctx = llama_cpp.llama_init_from_model(model, params)
assert ctx, "".join(lines)[-2000:]
log = "".join(lines)
buf = ctypes.create_string_buffer(256)
meta = {}
for key in ("chatbot.offload.n_gpu_layers", "chatbot.offload.n_ctx"):
    if llama_cpp.llama_model_meta_val_str(model, key.encode(), buf, 256) >= 0:
        meta[key] = buf.value.decode()
def mib(kind):
    return sum(float(x) for x in re.findall(kind + r" buffer size =\s*([\d.]+) MiB", log))
sizes = {"model": mib(r"CPU(?:_Mapped)? model"), "repack": mib("CPU_REPACK model")}
sizes |= {"kv": mib("KV"), "compute": mib("compute"), "meta": meta}
print(json.dumps(sizes))
"""


def measure(path: Path, n_ctx: int, flash_attn: bool = False) -> dict:
    """Buffer sizes (MiB) llama.cpp reports loading `path` on the CPU, and plan keys it sees."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path), str(n_ctx), "1" if flash_attn else "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def tiny_ggufs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("offload")
    return {
        "llama": write_tiny_gguf(folder / "tiny-llama.gguf"),
        # Per-layer arrays; block 1 has linear attention (no KV heads), block 2 no FFN.
        "deci": write_tiny_gguf(
            folder / "tiny-deci.gguf", "deci", kv_heads=[2, 0, 1, 4], n_ff=[512, 384, 0, 512]
        ),
    }


def assert_close(
    estimate: int, reported_mib: float, tolerance: float, what: str, slack_mib: float = 0.0
) -> None:
    reported = reported_mib * MiB
    assert abs(estimate - reported) <= max(tolerance * reported, slack_mib * MiB), (
        f"{what}: estimate {estimate / MiB:.2f} MiB, llama.cpp {reported_mib:.2f} MiB"
    )


def check_plan_against_llama_cpp(
    path: Path, label: str, n_ctx: int, flash_attn: bool, measurement
) -> None:
    """Our offload figures against llama.cpp's own buffer report, both recorded."""
    figures = read_figures(path)
    reported = measure(path, n_ctx, flash_attn)
    measurement(
        f"offload plan vs llama.cpp, {label} Q4_K_M ctx {n_ctx} fa {int(flash_attn)}: weights "
        f"{figures.weights_bytes / MiB:.2f}/{reported['model']:.2f} MiB, KV "
        f"{figures.kv_bytes(n_ctx, flash_attn) / MiB:.2f}/{reported['kv']:.2f} MiB, compute "
        f"{figures.compute_bytes(n_ctx, flash_attn) / MiB:.2f}/{reported['compute']:.2f} MiB"
    )
    assert_estimates_match(figures, reported, n_ctx, flash_attn)


def assert_estimates_match(
    figures, reported: dict, n_ctx: int, flash_attn: bool, compute_slack_mib: float = 0.0
) -> None:
    """Weights, KV cache and compute buffer as estimated vs as llama.cpp reported them."""
    assert_close(figures.weights_bytes, reported["model"], TOLERANCE, "weights")
    assert_close(figures.kv_bytes(n_ctx, flash_attn), reported["kv"], TOLERANCE, "KV cache")
    assert_close(
        figures.compute_bytes(n_ctx, flash_attn),
        reported["compute"],
        COMPUTE_TOLERANCE,
        "compute buffer",
        compute_slack_mib,
    )


@pytest.mark.parametrize(
    ("name", "n_ctx", "flash_attn"),
    [("llama", 300, False), ("llama", 2048, True), ("deci", 1024, False), ("deci", 700, True)],
)
def test_tiny_estimates_match_llama_cpp(tiny_ggufs, name, n_ctx, flash_attn):
    figures = read_figures(tiny_ggufs[name])
    reported = measure(tiny_ggufs[name], n_ctx, flash_attn)
    assert_estimates_match(figures, reported, n_ctx, flash_attn, COMPUTE_SLACK_MIB)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("n_ctx", "flash_attn"), [(1000, False), (4096, False), (8192, False), (8192, True)]
)
def test_smollm2_estimates_match_llama_cpp(smollm2_gguf, measurement, n_ctx, flash_attn):
    check_plan_against_llama_cpp(smollm2_gguf("Q4_K_M"), "SmolLM2", n_ctx, flash_attn, measurement)


def test_figures_place_tensors_like_llama_cpp(tmp_path):
    untied = read_figures(write_tiny_gguf(tmp_path / "untied.gguf", n_layer=2))
    tied = read_figures(write_tiny_gguf(tmp_path / "tied.gguf", n_layer=2, tied=True))
    embd = 4000 * 256 * 2
    assert untied.token_embd_bytes == tied.token_embd_bytes == embd
    # The output device holds the output norm plus output.weight, or token_embd's copy if tied.
    assert untied.output_bytes == tied.output_bytes == embd + 256 * 4
    assert untied.weights_bytes - tied.weights_bytes == embd
    assert len(set(untied.block_bytes)) == 1 and untied.n_layer == 2


def figures(n_layer: int = 10, block: int = 100 * MiB, output: int = 200 * MiB) -> ModelFigures:
    return ModelFigures(
        name="synthetic.gguf",
        n_layer=n_layer,
        block_bytes=(block,) * n_layer,
        output_bytes=output,
        token_embd_bytes=output,
        weights_bytes=n_layer * block + output,
        kv_heads=(8,) * n_layer,
        head_dim_k=128,
        head_dim_v=128,
        n_head=32,
        n_embd=4096,
        n_ff=11008,
        n_vocab=32000,
    )


def test_plan_fits_everything_on_a_large_card():
    plan = plan_offload(figures(), parse_size("24GiB"), 4096)
    assert (plan.n_gpu_layers, plan.offload_kqv, plan.flash_attn) == (11, True, True)
    assert plan.gpu_bytes <= plan.usable_bytes < plan.gpu_memory


def test_plan_fits_some_layers_and_no_more():
    model, card, n_ctx = figures(), parse_size("1.5GiB"), 4096
    plan = plan_offload(model, card, n_ctx)
    assert 1 <= plan.n_gpu_layers < plan.total_layers
    budget = usable_bytes(card)
    assert plan.gpu_bytes <= budget
    over = gpu_bytes(model, plan.n_gpu_layers + 1, n_ctx, plan.offload_kqv, plan.flash_attn)
    assert over > budget
    # Neither choice of KV placement would have offloaded more layers.
    for kqv in (True, False):
        assert gpu_bytes(model, plan.n_gpu_layers + 1, n_ctx, kqv, True) > budget


def test_plan_keeps_kv_on_cpu_when_that_fits_more_layers():
    # 1.25 GiB of KV cache at 32k tokens crowds layers out; on the CPU it lets them all in.
    model, card = figures(), parse_size("2.5GiB")
    plan = plan_offload(model, card, 32768)
    assert plan.n_gpu_layers == plan.total_layers
    assert not plan.offload_kqv and plan.flash_attn
    assert gpu_bytes(model, plan.total_layers, 32768, True, True) > usable_bytes(card)


def test_plan_fits_nothing_on_a_tiny_card():
    plan = plan_offload(figures(), parse_size("512MiB"), 4096)
    assert (plan.n_gpu_layers, plan.offload_kqv, plan.flash_attn, plan.gpu_bytes) == (
        0,
        False,
        False,
        0,
    )
    assert "nothing fits" in format_plan(plan)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8GiB", 8 * 2**30), ("8G", 8 * 2**30), ("512MiB", 512 * MiB), ("1.5gb", 3 * 2**29)],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "eight GiB", "8XB", "0GiB", "-1G"])
def test_parse_size_rejects_nonsense(text):
    with pytest.raises(ConverterError, match="cannot read memory size"):
        parse_size(text)


def test_plan_metadata_round_trip(tiny_ggufs, tmp_path):
    src = tiny_ggufs["llama"]
    plan = plan_file(src, parse_size("512MiB"), 1024)
    dst = tmp_path / "planned.gguf"
    write_plan_metadata(src, dst, plan)
    stored = read_plan(dst)
    assert stored is not None
    assert (stored.n_gpu_layers, stored.offload_kqv, stored.flash_attn) == (
        plan.n_gpu_layers,
        plan.offload_kqv,
        plan.flash_attn,
    )
    assert (stored.n_ctx, stored.gpu_memory) == (1024, 512 * MiB)
    assert read_plan(src) is None  # the source is untouched
    before, after = gguf.GGUFReader(src), gguf.GGUFReader(dst)
    assert [t.name for t in before.tensors] == [t.name for t in after.tensors]
    for old, new in zip(before.tensors, after.tensors, strict=True):
        assert old.tensor_type == new.tensor_type and np.array_equal(old.data, new.data)
    # Every original key survives; llama.cpp loads the copy and sees the plan.
    old_values = read_header_values(src)
    assert {k: v for k, v in read_header_values(dst).items() if k in old_values} == old_values
    assert measure(dst, 256)["meta"]["chatbot.offload.n_ctx"] == "1024"


def test_rewriting_in_place_replaces_the_keys(tiny_ggufs, tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(tiny_ggufs["llama"].read_bytes())
    write_plan_metadata(path, path, plan_file(path, parse_size("24GiB"), 2048))
    write_plan_metadata(path, path, plan_file(path, parse_size("300MiB"), 8192))
    fields = [f.name for f in gguf.GGUFReader(path).fields.values()]
    assert fields.count("chatbot.offload.n_ctx") == 1
    assert read_plan(path).n_ctx == 8192 and read_plan(path).gpu_memory == 300 * MiB
    assert not list(tmp_path.glob(".*"))  # no temp file left behind


def test_plan_command_prints_and_writes(tiny_ggufs, tmp_path, capsys):
    path = tmp_path / "model.gguf"
    path.write_bytes(tiny_ggufs["llama"].read_bytes())
    assert cli.main(["plan", str(path), "--gpu-memory", "8GiB", "--ctx", "2048"]) == 0
    out = capsys.readouterr().out
    assert "n_gpu_layers" in out and "5/5" in out and "KV cache F16 at 2048 tokens" in out
    assert read_plan(path) is None  # printing only
    assert cli.main(["plan", str(path), "--gpu-memory", "8GiB", "--write"]) == 0
    assert read_plan(path).n_gpu_layers == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpu-memory", "lots"], "error: cannot read memory size 'lots'"),
        (["--gpu-memory", "8GiB", "--ctx", "0"], "error: --ctx must be a positive number"),
    ],
)
def test_plan_command_bad_input(tiny_ggufs, capsys, args, message):
    assert cli.main(["plan", str(tiny_ggufs["llama"]), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_plan_command_missing_or_foreign_file(tmp_path, capsys):
    assert cli.main(["plan", str(tmp_path / "none.gguf"), "--gpu-memory", "8G"]) == 2
    assert "does not exist" in capsys.readouterr().err
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    assert cli.main(["plan", str(text), "--gpu-memory", "8G"]) == 2
    assert "is not a readable GGUF file" in capsys.readouterr().err


def test_conversion_stores_the_plan(tmp_path, capsys):
    from tests.tiny_models import tiny_model

    out, report = tmp_path / "tiny.gguf", tmp_path / "report.json"
    args = [str(tiny_model("llama-bpe")), "-o", str(out), "--quant", "Q8_0", "-q"]
    args += ["--gpu-memory", "8GiB", "--ctx", "2048", "--report", str(report)]
    assert cli.main(args) == 0
    stored = read_plan(out)
    assert stored is not None and (stored.n_gpu_layers, stored.n_ctx) == (3, 2048)
    section = json.loads(report.read_text())["extra"]["offload"]
    assert section["n_gpu_layers"] == 3 and section["summary"].startswith("3/3 layers")
    assert section["weights_bytes"] == read_figures(out).weights_bytes


def test_conversion_rejects_a_bad_size_before_writing(tmp_path, capsys):
    from tests.tiny_models import tiny_model

    out = tmp_path / "tiny.gguf"
    args = [str(tiny_model("llama-bpe")), "-o", str(out), "--gpu-memory", "8 gigs"]
    assert cli.main(args) == 2
    assert capsys.readouterr().err.startswith("error: cannot read memory size '8 gigs'")
    assert not out.exists()
