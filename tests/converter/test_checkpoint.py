"""Checkpoint loading: sharded safetensors, in-memory state dicts, refusals with clear errors."""

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from converter.architectures import architecture_for, supported
from converter.checkpoint import Checkpoint
from converter.errors import SourceError
from converter.options import ConvertOptions
from converter.pipeline import convert, convert_checkpoint
from tests.tiny_models import tiny_model

TINY = "llama-bpe"


def gguf_tensors(path: Path) -> dict[str, np.ndarray]:
    return {t.name: np.array(t.data) for t in gguf.GGUFReader(path).tensors}


@pytest.fixture(scope="module")
def reference_gguf(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ref.gguf"
    convert(str(tiny_model(TINY)), out, ConvertOptions(quant="F32"))
    return out


def _copy_without_weights(tmp_path: Path) -> Path:
    dest = tmp_path / "src"
    shutil.copytree(tiny_model(TINY), dest, ignore=shutil.ignore_patterns("*.safetensors"))
    return dest


def _shard(tmp_path: Path) -> Path:
    """Split the tiny model into two shards with an index, as save_pretrained does for big ones."""
    state = load_file(tiny_model(TINY) / "model.safetensors")
    dest = _copy_without_weights(tmp_path)
    names = sorted(state)
    halves = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    weight_map = {}
    for file, part in halves.items():
        save_file({name: state[name] for name in part}, dest / file)
        weight_map.update(dict.fromkeys(part, file))
    index = {"metadata": {}, "weight_map": weight_map}
    (dest / "model.safetensors.index.json").write_text(json.dumps(index))
    return dest


def test_sharded_checkpoint_converts_identically(tmp_path, reference_gguf):
    out = tmp_path / "sharded.gguf"
    convert(str(_shard(tmp_path)), out, ConvertOptions(quant="F32"))
    expected, got = gguf_tensors(reference_gguf), gguf_tensors(out)
    assert got.keys() == expected.keys()
    assert all(np.array_equal(got[name], expected[name]) for name in expected)


def test_missing_shard_is_named(tmp_path):
    dest = _shard(tmp_path)
    (dest / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(SourceError, match="model-00002-of-00002.safetensors"):
        Checkpoint.open(dest)


def test_in_memory_state_dict_converts_like_the_folder(tmp_path, reference_gguf):
    """The pruning path: a state dict and config in memory, tokenizer files from a folder."""
    folder = tiny_model(TINY)
    config = json.loads((folder / "config.json").read_text())
    checkpoint = Checkpoint.from_state_dict(config, load_file(folder / "model.safetensors"), folder)
    out = tmp_path / "memory.gguf"
    convert_checkpoint(checkpoint, out, ConvertOptions(quant="F32"))
    expected, got = gguf_tensors(reference_gguf), gguf_tensors(out)
    assert all(np.array_equal(got[name], expected[name]) for name in expected)


def test_state_dict_missing_a_block_is_refused():
    folder = tiny_model(TINY)
    config = json.loads((folder / "config.json").read_text())
    state = {
        k: v for k, v in load_file(folder / "model.safetensors").items() if ".layers.1." not in k
    }
    with pytest.raises(SourceError, match="blk.1.attn_norm.weight"):
        architecture_for(Checkpoint.from_state_dict(config, state, folder)).tensor_specs()


@pytest.mark.parametrize("rope_type", ["dynamic", "longrope"])
def test_unsupported_rope_scaling_is_refused(rope_type):
    folder = tiny_model(TINY)
    config = json.loads((folder / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": rope_type, "factor": 2.0, "rope_theta": 10000.0}
    checkpoint = Checkpoint.from_state_dict(config, load_file(folder / "model.safetensors"), folder)
    writer = gguf.GGUFWriter(None, "llama")
    with pytest.raises(SourceError, match=f"unsupported rope scaling '{rope_type}'.*llama3"):
        architecture_for(checkpoint).add_hparams(writer)


def test_registry_lists_every_architecture():
    assert {
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
    } <= set(supported())
