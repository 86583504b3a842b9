"""Pruned models written as GGUF compute what the pruned torch model computes, and still chat.

A 4-block tiny llama (hidden 64, FFN 128, 4 heads / 2 KV heads, tied embeddings) is calibrated
on the shipped calibration text, pruned in depth, in uniform width (stays `llama`) and in
per-layer width (written as `deci`), then converted to F32: llama.cpp's next-token logits must
match the pruned torch model's. Bad input goes through the CLI in a subprocess: exit code 2, one
`error:` line, nothing written.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from converter.info import read_summary
from converter.optimize.calibrate import DEFAULT_CALIBRATION_FILE, calibrate, token_windows
from converter.optimize.prune import apply_plan, make_plan, pruned_checkpoint
from converter.optimize.refit import input_grams, refit_columns, refit_plan
from converter.options import ConvertOptions
from converter.paths import cache_dir
from converter.pipeline import convert_checkpoint
from tests.tiny_tokenizers import build_spm_tokenizer

F32_BOUND = 1e-3
GGML_TYPE_F32 = 0
PLANS = {
    "depth": {"layers": 1},
    "uniform-width": {"ffn_ratio": 0.25, "heads": 1},
    "per-layer-width": {"ffn_ratio": 0.4, "heads": 1, "per_layer": True},
}


@pytest.fixture(scope="session")
def tiny_llama() -> Path:
    """A 4-block random llama with a SentencePiece tokenizer, cached on disk."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    dest = cache_dir() / "test-models" / "prune-llama-v1"
    if (dest / "config.json").is_file():
        return dest
    vocab = build_spm_tokenizer(dest)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        rms_norm_eps=1e-5, initializer_range=0.1, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(dest)
    return dest


@pytest.fixture(scope="session")
def calibrated(tiny_llama):
    """The tiny model, its calibration windows and statistics."""
    from transformers import AutoTokenizer

    from converter.checkpoint import Checkpoint
    from converter.optimize.run import load_torch_model

    checkpoint = Checkpoint.open(tiny_llama)
    model, _ = load_torch_model(checkpoint, "cpu")
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    windows = token_windows(tokenizer, DEFAULT_CALIBRATION_FILE.read_text(encoding="utf-8"))
    return checkpoint, windows, calibrate(model, windows[:4])


@pytest.fixture(scope="session")
def pruned(calibrated, tmp_path_factory):
    """plan name -> (pruned torch model, its plan, F32 GGUF path)."""
    from converter.optimize.run import load_torch_model

    checkpoint, windows, stats = calibrated
    folder = tmp_path_factory.mktemp("pruned")
    done = {}

    def get(name: str):
        if name not in done:
            model, _ = load_torch_model(checkpoint, "cpu")
            plan = make_plan(model, stats, **PLANS[name])
            refit_plan(model, plan, windows[:4])  # as the converter does before slicing
            apply_plan(model, plan)
            out = folder / f"{name}.gguf"
            ckpt = pruned_checkpoint(model, checkpoint.config, checkpoint.tokenizer_dir)
            convert_checkpoint(ckpt, out, ConvertOptions(quant="F32"))
            done[name] = model, plan, out
        return done[name]

    return get


def llama_logits(path: Path, ids: list[int]) -> np.ndarray:
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=128, logits_all=True, verbose=False, n_threads=2,
                          type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)  # fmt: skip
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])
    finally:
        llm.close()


@pytest.mark.parametrize("name", list(PLANS))
def test_pruned_gguf_matches_pruned_torch(name, pruned):
    import torch

    model, plan, path = pruned(name)
    ids = np.random.default_rng(1).integers(0, model.config.vocab_size, 64).tolist()
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0].numpy()
    got = llama_logits(path, ids)
    assert got.shape == expected.shape
    assert (got.argmax(-1) == expected.argmax(-1)).mean() >= 0.99
    assert np.abs(got - expected).max() < F32_BOUND
    summary = read_summary(path)
    assert summary.architecture == ("deci" if name == "per-layer-width" else "llama")
    assert plan.params_after < plan.params_before


def test_plans_shrink_what_they_say(pruned):
    depth = pruned("depth")[1]
    assert [lp.keep for lp in depth.layers].count(False) == 1
    dropped = next(lp for lp in depth.layers if not lp.keep)
    assert dropped.influence == min(lp.influence for lp in depth.layers)
    uniform = pruned("uniform-width")[1]
    assert {(lp.ffn, lp.kv_heads, lp.heads) for lp in uniform.kept} == {(96, 1, 2)}
    per_layer = pruned("per-layer-width")[1]
    assert per_layer.per_layer
    assert sum(lp.ffn for lp in per_layer.kept) <= 4 * 128 * 0.6 + 4


def test_refit_lowers_ffn_output_error_on_unseen_text(calibrated):
    """Refit kept columns of down_proj reproduce the unpruned FFN output better than the plain
    kept columns, on calibration windows the fit did not see."""
    import torch

    from converter.optimize.run import load_torch_model

    checkpoint, windows, stats = calibrated
    assert len(windows) >= 6
    model, _ = load_torch_model(checkpoint, "cpu")
    plan = make_plan(model, stats, ffn_ratio=0.25)
    down = model.model.layers[1].mlp.down_proj
    gram = input_grams(model, windows[:4], {"down": down})["down"]
    keep = plan.ffn_keep[1]
    refit = refit_columns(down.weight, gram, keep).double()
    acts = []
    hook = down.register_forward_hook(lambda _m, args, _o: acts.append(args[0].flatten(0, 1)))
    with torch.no_grad():
        for ids in windows[4:6]:
            model(input_ids=ids)
    hook.remove()
    x, w = torch.cat(acts).double(), down.weight.detach().double()
    full = x @ w.T

    def error(kept_weight: torch.Tensor) -> float:
        return float((x[:, keep] @ kept_weight.T - full).norm() / full.norm())

    assert refit.shape == (w.shape[0], len(keep))
    assert error(refit) < 0.95 * error(w[:, keep])  # 0.19 vs 0.21: random weights correlate little


@pytest.mark.parametrize("name", list(PLANS))
def test_pruned_model_chats(name, pruned):
    import llama_cpp

    llm = llama_cpp.Llama(str(pruned(name)[2]), n_ctx=256, verbose=False, n_threads=2, seed=1)
    try:
        reply = llm.create_chat_completion(
            [{"role": "user", "content": "Where is my order?"}], max_tokens=8, temperature=0.0
        )
    finally:
        llm.close()
    assert reply["usage"]["completion_tokens"] > 0
    assert isinstance(reply["choices"][0]["message"]["content"], str)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "converter", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_auto_plan_heals_and_reports(tiny_llama, tmp_path):
    out, report = tmp_path / "auto.gguf", tmp_path / "report.json"
    done = run_cli(str(tiny_llama), "-o", str(out), "--quant", "Q8_0", "--prune", "0.3",
                   "--heal-steps", "3", "--device", "cpu", "--report", str(report))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "influence" in done.stdout and "block parameters" in done.stdout
    data = json.loads(report.read_text())
    blocks = data["extra"]["optimize"]["block_parameters"]
    assert blocks["after"] <= 0.72 * blocks["before"]
    assert data["extra"]["optimize"]["heal"]["steps"] == 3
    assert len(data["extra"]["optimize"]["plan"]) == 4
    assert data["extra"]["parameters"]["after"] < data["extra"]["parameters"]["before"]


def test_cli_imatrix_and_tensor_types(tiny_llama, tmp_path):
    out, report = tmp_path / "q4.gguf", tmp_path / "report.json"
    done = run_cli(str(tiny_llama), "-o", str(out), "--quant", "Q4_K_M", "--tensor-type",
                   "token_embd=Q8_0", "--report", str(report), "-q")  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(report.read_text())
    assert data["extra"]["imatrix"] is True
    assert data["types_by_kind"]["token_embd.weight"] == {"Q8_0": 1}


BAD_INPUT = {
    "ratio out of range": (["--prune-ffn", "1.5"], "--prune-ffn"),
    "auto ratio out of range": (["--prune", "0.95"], "--prune"),
    "too many layers": (["--prune-layers", "4"], "4 blocks"),
    "too short": (["--prune-layers", "1", "--calibration", "SHORT"], "too short"),
    "empty": (["--prune-layers", "1", "--calibration", "EMPTY"], "is empty"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exit_2_nothing_written(case, tiny_llama, tmp_path):
    (tmp_path / "short.txt").write_text("Hello there, how are you?", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    args, expected = BAD_INPUT[case]
    files = {"SHORT": str(tmp_path / "short.txt"), "EMPTY": str(tmp_path / "empty.txt")}
    args = [files.get(a, a) for a in args]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    done = run_cli(str(tiny_llama), "-o", str(out_dir / "m.gguf"), "--quant", "F32", *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert list(out_dir.iterdir()) == []
