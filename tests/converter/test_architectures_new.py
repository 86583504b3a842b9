"""Gemma 3, Phi-3 and SmolLM3: converted GGUFs compute and tokenize what transformers does.

Each tiny model (tests/tiny_models_new.py) is converted to F32 and run by llama.cpp with an F32
KV cache on the same token ids as transformers: top-1 agreement 1.0 and logits within 1e-3.
llama.cpp tokenizes with the written vocabulary as the source tokenizer does (Gemma 3's real
262k tokenizer, SentencePiece for Phi-3, byte-level BPE for SmolLM3). The keys that carry each
architecture's particulars are checked in the file, and the tools around the converter (info,
plan, eval, the chatbot) run on each; bad input gets one line and no file.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest

from converter.architectures import gemma3
from converter.cli import commands as cli
from converter.offload import read_figures
from converter.options import ConvertOptions
from converter.pipeline import convert
from tests.converter.test_offload import COMPUTE_SLACK_MIB, assert_estimates_match, measure
from tests.converter.test_tiny_logits import gguf_logits, top1_agreement
from tests.converter.test_vocab import VARIED_TEXT
from tests.tiny_models_new import NEW_MODELS, tiny_new_model

BOUND = 1e-3  # the bar; measured: <= 4e-6 (Phi-3, SmolLM3), <= 2.5e-4 (Gemma 3)
N_TOKENS = 96
HELDOUT = Path(__file__).resolve().parents[2] / "data" / "eval" / "heldout.txt"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """name -> F32 GGUF of the tiny model, converted once per module."""
    folder = tmp_path_factory.mktemp("new-archs")
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            done[name] = folder / f"{name}.gguf"
            convert(str(tiny_new_model(name)), done[name], ConvertOptions(quant="F32"))
        return done[name]

    return get


def reference_logits(name: str) -> tuple[list[int], np.ndarray]:
    """transformers' logits (float32) on fixed random ids; the text model of a multimodal one."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma3ForConditionalGeneration

    folder = tiny_new_model(name)
    cls = Gemma3ForConditionalGeneration if name == "gemma3-multimodal" else AutoModelForCausalLM
    model = cls.from_pretrained(folder, dtype=torch.float32)
    vocab_size = model.config.get_text_config().vocab_size
    ids = np.random.default_rng(0).integers(0, vocab_size, N_TOKENS).tolist()
    with torch.no_grad():
        return ids, model(torch.tensor([ids])).logits[0].numpy()


@pytest.mark.parametrize("name", list(NEW_MODELS))
def test_f32_logits_match_transformers(name, converted, measurement):
    ids, expected = reference_logits(name)
    got = gguf_logits(converted(name), ids)
    assert got.shape == expected.shape
    agreement, diff = top1_agreement(got, expected), float(np.abs(got - expected).max())
    measurement(f"{name} F32 vs transformers: top-1 {agreement:.3f}, max |diff| {diff:.2e}")
    assert agreement == 1.0
    assert diff < BOUND


def test_phi3_longrope_long_factors_past_the_original_context(converted, measurement):
    """Past the original context (256 tokens here) both sides use the long factors: llama.cpp
    because the context is longer, transformers because the sequence is. (With a context over
    the original but a shorter sequence they differ; that is llama.cpp's rule, as for any
    LongRoPE GGUF.)"""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_new_model("phi3-longrope"))
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, 300).tolist()
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0].numpy()
    llm = llama_cpp.Llama(str(converted("phi3-longrope")), n_ctx=512, logits_all=True,
                          verbose=False, n_threads=2, type_k=0, type_v=0)  # fmt: skip
    try:
        llm.eval(ids)
        got = np.array(llm.scores[: len(ids)])
    finally:
        llm.close()
    diff = float(np.abs(got - expected).max())
    measurement(f"phi3-longrope, 300 tokens (long factors): max |diff| {diff:.2e}")
    assert top1_agreement(got, expected) == 1.0 and diff < BOUND


@pytest.mark.parametrize("name", ["phi3", "smollm3"])
def test_q4_k_m_with_the_importance_matrix(name, tmp_path):
    """The torch steps (calibration, importance matrix) and llama.cpp's quantizer take the new
    layouts: fused Phi-3 projections map to attn_qkv/ffn_up in the matrix. (Gemma 3: the slow
    test on the real 270M model.)"""
    out, report = tmp_path / "q4.gguf", tmp_path / "report.json"
    convert(str(tiny_new_model(name)), out, ConvertOptions(quant="Q4_K_M", report_path=report))
    assert json.loads(report.read_text())["extra"]["imatrix"] is True
    ids, expected = reference_logits(name)
    got = gguf_logits(out, ids, f32_cache=False)
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.9


def source_ids(name: str, text: str) -> list[int]:
    """The source tokenizer's ids with its own special tokens (sentencepiece for a .model)."""
    folder = tiny_new_model(name)
    if (folder / "tokenizer.model").is_file():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
        return [sp.bos_id(), *sp.encode(text)]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)(text).input_ids


@pytest.mark.parametrize("name", ["gemma3", "phi3", "smollm3"])
def test_llama_cpp_tokenizes_like_the_source(name, converted):
    llm = llama_cpp.Llama(str(converted(name)), vocab_only=True, verbose=False)
    texts = [VARIED_TEXT, HELDOUT.read_text(encoding="utf-8")[:6000], "a  b   c\n\n\t x"]
    for text in texts:
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == source_ids(name, text)


@pytest.mark.parametrize("name", ["gemma3", "phi3", "smollm3"])
def test_chat_template_markers_are_single_tokens(name, converted):
    """The model's own chat template renders to text whose turn markers llama.cpp reads as
    the same special tokens the HF tokenizer does."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tiny_new_model(name))
    messages = [{"role": "user", "content": "Where is my order?"}]
    rendered = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    llm = llama_cpp.Llama(str(converted(name)), vocab_only=True, verbose=False)
    got = llm.tokenize(rendered.encode(), add_bos=False, special=True)
    assert got == hf(rendered, add_special_tokens=False).input_ids
    reader = gguf.GGUFReader(converted(name))
    assert reader.get_field(gguf.Keys.Tokenizer.CHAT_TEMPLATE) is not None


def keys(path: Path) -> dict:
    """Every key's value, but the token arrays (262k strings for Gemma: slow to decode)."""
    reader = gguf.GGUFReader(path)
    return {
        name: len(field.data) if name.startswith("tokenizer.ggml.t") else field.contents()
        for name, field in reader.fields.items()
        if not name.startswith(("tokenizer.ggml.scores", "tokenizer.ggml.merges"))
    }


def test_gemma3_keys_and_norms(converted):
    import torch
    from safetensors.torch import load_file

    found = keys(converted("gemma3"))
    assert found["general.architecture"] == "gemma3"
    assert found["gemma3.attention.sliding_window"] == 16
    assert found["gemma3.attention.sliding_window_pattern"] == [
        True, False, True, True, True, False,
    ]  # fmt: skip
    assert found["gemma3.rope.freq_base_swa"] == 10000.0
    assert found["gemma3.rope.freq_base"] == 1e6
    assert found["gemma3.rope.scaling.factor"] == 2.0
    assert found["gemma3.final_logit_softcapping"] == 30.0
    assert found["gemma3.attention.key_length"] == 32
    assert (found["tokenizer.ggml.model"], found["tokenizer.ggml.add_space_prefix"]) == (
        "llama",
        False,
    )
    assert found["tokenizer.ggml.tokens"] == found["tokenizer.ggml.token_type"] == 262144
    # Gemma's norms multiply by (1 + weight): written with the one added.
    hf = load_file(tiny_new_model("gemma3") / "model.safetensors")
    tensors = {t.name: t for t in gguf.GGUFReader(converted("gemma3")).tensors}
    written = torch.from_numpy(np.array(tensors["blk.0.attn_norm.weight"].data))
    assert torch.allclose(written, hf["model.layers.0.input_layernorm.weight"] + 1)
    assert "output.weight" not in tensors  # tied to token_embd


def test_phi3_fused_tensors_and_longrope(converted):
    found = keys(converted("phi3-longrope"))
    tensors = {t.name: tuple(t.shape) for t in gguf.GGUFReader(converted("phi3-longrope")).tensors}
    # GGUF lists shapes innermost first: (input, output).
    assert tensors["blk.0.attn_qkv.weight"] == (64, (4 + 2 + 2) * 16)
    assert tensors["blk.0.ffn_up.weight"] == (64, 2 * 128)
    assert tensors["rope_factors_long.weight"] == tensors["rope_factors_short.weight"] == (4,)
    assert found["phi3.rope.dimension_count"] == 8  # partial_rotary_factor 0.5 of 16
    assert found["phi3.rope.scaling.original_context_length"] == 256
    expected = (1 + np.log(1024 / 256) / np.log(256)) ** 0.5
    assert found["phi3.rope.scaling.attn_factor"] == pytest.approx(expected, rel=1e-6)
    assert "rope_factors_long.weight" not in {
        t.name for t in gguf.GGUFReader(converted("phi3")).tensors
    }


def test_smollm3_architecture(converted):
    assert keys(converted("smollm3"))["general.architecture"] == "smollm3"


@pytest.mark.parametrize(("name", "arch"), [("gemma3", "gemma3"), ("phi3", "phi3"),
                                            ("smollm3", "smollm3")])  # fmt: skip
def test_info_and_plan(name, arch, converted, capsys):
    path = converted(name)
    assert cli.main(["info", str(path)]) == 0
    assert arch in capsys.readouterr().out
    assert cli.main(["plan", str(path), "--gpu-memory", "8GiB", "--ctx", "1024"]) == 0
    assert "n_gpu_layers" in capsys.readouterr().out
    # Gemma's compute buffer (512 MiB of logits for its 262k vocabulary) makes each load slow.
    settings = ((1024, False),) if name == "gemma3" else ((1024, False), (2048, True))
    for n_ctx, flash_attn in settings:
        reported = measure(path, n_ctx, flash_attn)
        assert_estimates_match(read_figures(path), reported, n_ctx, flash_attn, COMPUTE_SLACK_MIB)


@pytest.mark.parametrize("name", ["phi3", "smollm3"])
def test_eval(name, converted, capsys):
    assert cli.main(["eval", str(converted(name)), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["perplexity"]["value"] > 1


@pytest.mark.parametrize("name", ["gemma3", "phi3", "smollm3"])
def test_chatbot_asks_each(name, converted, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "chatbot.cli", "ask", "Hello there", "--model",
         str(converted(name)), "--db", str(tmp_path / "chat.db"), "--ctx", "512",
         "--threads", "1", "--max-tokens", "8", "--temperature", "0", "--json"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    reply = json.loads(done.stdout)
    assert reply["completion_tokens"] > 0, reply


# ---- bad input -------------------------------------------------------------------------------


def source_copy(name: str, dest: Path, **config_changes) -> Path:
    """The tiny model's folder with config.json changed (weights linked, not copied)."""
    source = tiny_new_model(name)
    dest.mkdir()
    for item in source.iterdir():
        if item.suffix == ".safetensors":
            (dest / item.name).symlink_to(item)
        elif item.name != "config.json":
            (dest / item.name).write_bytes(item.read_bytes())
    config = json.loads((source / "config.json").read_text())
    for key, value in config_changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def one_error_line(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err
    return err


@pytest.mark.parametrize(
    ("name", "changes", "fragment"),
    [
        ("phi3", {"num_attention_heads": None}, "config.json lacks num_attention_heads"),
        ("gemma3", {"sliding_window": None}, "config.json lacks sliding_window"),
        ("smollm3", {"no_rope_layers": [1, 0, 1, 1]}, "no_rope_layers [1, 0, 1, 1]"),
        ("gemma3", {"attn_logit_softcapping": 50.0}, "attn_logit_softcapping"),
        ("phi3", {"architectures": ["Phi4FlashForCausalLM"]}, "Gemma3ForCausalLM, Gemma3ForCo"),
    ],
)
def test_bad_config_gets_one_line_and_no_file(name, changes, fragment, tmp_path, capsys):
    source = source_copy(name, tmp_path / "src", **changes)
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "model.gguf"
    assert cli.main([str(source), "-o", str(out), "--quant", "F16", "-q"]) == 2
    err = one_error_line(capsys, fragment)
    if "supported" in err:
        for arch in ("Phi3ForCausalLM", "SmolLM3ForCausalLM", "LlamaForCausalLM"):
            assert arch in err
    assert list(out.parent.iterdir()) == []  # nothing written, no temporary file left


def test_pruning_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "out.gguf"
    args = [str(tiny_new_model("smollm3")), "-o", str(out), "--prune-layers", "1", "-q"]
    assert cli.main(args) == 2
    one_error_line(capsys, "pruning does not support SmolLM3ForCausalLM", "LlamaForCausalLM")
    assert not out.exists()


def test_multimodal_gemma3_converts_text_only_with_a_note(tmp_path, caplog, monkeypatch):
    """The note is a logging warning: on stderr for a user (Python's last-resort handler), in
    caplog here."""
    monkeypatch.setattr(gemma3, "_NOTED", set())
    out = tmp_path / "text.gguf"
    source = tiny_new_model("gemma3-multimodal")
    assert cli.main([str(source), "-o", str(out), "--quant", "F16", "-q"]) == 0
    notes = [r.getMessage() for r in caplog.records if r.name == gemma3.__name__]
    assert len(notes) == 1 and "vision tower and projector are left out" in notes[0]
    names = {t.name for t in gguf.GGUFReader(out).tensors}
    assert "blk.5.post_ffw_norm.weight" in names and not any("v." in n[:2] for n in names)


def test_sentencepiece_tokenizer_json_with_space_prefix(tmp_path):
    """A Llama-2-style tokenizer saved by transformers as tokenizer.json alone (a Metaspace that
    prepends a space) is written as SentencePiece with add_space_prefix; plain text tokenizes
    as in transformers. Not covered, and known to differ: right after a special token llama.cpp
    adds that space too (transformers 5 does not), and a run of spaces at the very start.
    Gemma 3's tokenizer.json prepends nothing."""
    from transformers import AutoTokenizer

    from tests.converter.test_vocab import load_vocab, write_vocab_gguf
    from tests.tiny_tokenizers import build_spm_tokenizer

    size = build_spm_tokenizer(tmp_path / "spm")
    AutoTokenizer.from_pretrained(tmp_path / "spm").save_pretrained(tmp_path / "json")
    assert not (tmp_path / "json" / "tokenizer.model").exists()
    summary = write_vocab_gguf(tmp_path / "vocab.gguf", tmp_path / "json", size)
    assert (summary.model, summary.add_bos) == ("llama", True)
    llm, hf = load_vocab(tmp_path / "vocab.gguf"), AutoTokenizer.from_pretrained(tmp_path / "json")
    for text in (VARIED_TEXT, "Hi there"):
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == hf(text).input_ids
    assert keys(tmp_path / "vocab.gguf")["tokenizer.ggml.add_space_prefix"] is True
