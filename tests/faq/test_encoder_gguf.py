"""The sentence encoder GGUF: llama.cpp reads its WordPiece vocabulary as BERT does."""

import json
import shutil

import pytest
from tokenizers import Tokenizer

from chatbot.faq.embed import _extracted, model_zip
from converter.encoder_gguf import write_encoder_gguf
from converter.errors import ConverterError

TEXTS = [
    "Where is my order?",
    "Café déjà vu, naïve résumé!",
    "ÜNÏCÖDÉ Ångström straße",
    "DON'T  shout!!",
    "e-mail: a.b@c.example $19.99, 10% off 3-5 days",
    "我想退货 and 返品",
    "emoji 😀 ok 👍🏽",
    "tab\there\nnew line",
    "",
    "   ",
    "unbelievably interchangeable antidisestablishmentarianism",
]


def test_llama_cpp_tokenizes_like_the_bert_tokenizer(store_kb):
    folder = _extracted(model_zip())
    reference = Tokenizer.from_file(str(folder / "tokenizer.json"))
    reference.no_padding()
    llm = store_kb.encoder.llm
    for text in TEXTS:
        ours = llm.tokenize(text.encode("utf-8"), add_bos=True)
        assert ours == reference.encode(text).ids, text


def test_a_model_that_is_not_bert_is_refused_and_nothing_is_written(tmp_path):
    folder = tmp_path / "not-bert"
    shutil.copytree(_extracted(model_zip()), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    output = tmp_path / "out.gguf"
    with pytest.raises(ConverterError, match="not BERT"):
        write_encoder_gguf(folder, output)
    assert list(tmp_path.glob("*.gguf*")) == [] and not list(tmp_path.glob(".out.gguf*"))


def test_a_truncated_checkpoint_is_refused_and_nothing_is_written(tmp_path):
    folder = tmp_path / "truncated"
    shutil.copytree(_extracted(model_zip()), folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    output = tmp_path / "out.gguf"
    with pytest.raises(ConverterError, match="cannot read the sentence encoder"):
        write_encoder_gguf(folder, output)
    assert not output.exists() and not list(tmp_path.glob(".out.gguf*"))
