"""The converter's tokenizer metadata makes llama.cpp tokenize exactly like the source tokenizer.

Each tiny tokenizer is written into a vocab-only GGUF (minimal llama hyperparameters, no
tensors) and loaded by llama.cpp; its ids must equal the HF tokenizer's (SentencePiece: the
sentencepiece library's) on text that stresses the pre-tokenizer.
"""

import json
from pathlib import Path

import gguf
import llama_cpp
import pytest
import sentencepiece as spm
from transformers import AutoTokenizer

from converter.errors import SourceError
from converter.vocab import VocabSummary, add_vocab
from tests.tiny_tokenizers import BPE_STYLES, build_bpe_tokenizer, build_spm_tokenizer

# Code, contractions, digit runs, emoji (with ZWJ), CJK, Cyrillic, accents, whitespace runs.
VARIED_TEXT = (
    "Hello, World! I'm sure you're right; they'd've LOVED it.\n"
    "Order #48213: $1,234.56 on 2024-03-15, 3333333 units, 1e-9, v0.1.2\n\n\n"
    "def greet(name: str) -> str:\n"
    '    return f"Hi {name}!"  # four spaces\n'
    "\tif x == 0:\t\treturn [1, 2, 3]\n"
    "🚀 🦙🦙 ✅ 😶\u200d🌫️ 👍🏽 你好，世界！我想在apple工作1314151天～ こんにちは\n"
    "Привет, мир! café naïve Straße ------======= ''''''```````\n"
    "   leading spaces, trailing spaces   \n \n\n  \t \n"
)
CHAT_TEXT = "<|im_start|>user\nWhere is my order?<|im_end|>\n<|im_start|>assistant\n"


def write_vocab_gguf(path: Path, model_dir: Path, vocab_size: int) -> VocabSummary:
    """A GGUF holding the vocabulary and just enough llama hyperparameters for vocab_only."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(256)
    writer.add_embedding_length(64)
    writer.add_block_count(1)
    writer.add_feed_forward_length(128)
    writer.add_head_count(4)
    writer.add_head_count_kv(4)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(16)
    summary = add_vocab(writer, model_dir, vocab_size)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return summary


def load_vocab(path: Path) -> llama_cpp.Llama:
    return llama_cpp.Llama(str(path), vocab_only=True, verbose=False)


def llama_ids(llm: llama_cpp.Llama, text: str, *, bos: bool = False, special: bool = False):
    return llm.tokenize(text.encode("utf-8"), add_bos=bos, special=special)


@pytest.fixture(scope="session")
def bpe_gguf(tmp_path_factory):
    """Per style: (HF tokenizer folder, vocab-only GGUF path, summary, vocab size), built once."""
    built = {}

    def build(style: str):
        if style not in built:
            root = tmp_path_factory.mktemp(f"vocab-{style}")
            size = build_bpe_tokenizer(root / "tok", style)
            summary = write_vocab_gguf(root / "vocab.gguf", root / "tok", size + 3)
            built[style] = (root / "tok", root / "vocab.gguf", summary, size)
        return built[style]

    return build


@pytest.mark.parametrize(
    ("style", "pre"), [("smollm", "smollm"), ("llama3", "llama-bpe"), ("qwen2", "qwen2")]
)
def test_bpe_pretokenizer_identified(bpe_gguf, style, pre):
    _, path, summary, size = bpe_gguf(style)
    assert (summary.model, summary.pre) == ("gpt2", pre)
    assert summary.n_tokens == size + 3  # padded up to the model's vocab_size
    reader = gguf.GGUFReader(path)
    types = reader.fields["tokenizer.ggml.token_type"]
    assert [int(types.parts[i][0]) for i in types.data[-3:]] == [gguf.TokenType.UNUSED] * 3
    assert bytes(reader.fields["tokenizer.ggml.pre"].parts[-1]).decode() == pre


@pytest.mark.parametrize("style", BPE_STYLES)
def test_bpe_tokenization_matches_hf(bpe_gguf, style):
    tok_dir, path, _, _ = bpe_gguf(style)
    hf = AutoTokenizer.from_pretrained(tok_dir)
    llm = load_vocab(path)
    expected = hf.encode(VARIED_TEXT, add_special_tokens=False)
    assert len(expected) > 100
    assert llama_ids(llm, VARIED_TEXT) == expected
    # bos added (Llama 3) or not (SmolLM2, Qwen2) exactly as the HF tokenizer does.
    assert llama_ids(llm, "Hi there", bos=True) == hf.encode("Hi there")
    # Special tokens in text are parsed as single control tokens.
    assert llama_ids(llm, CHAT_TEXT, special=True) == hf.encode(CHAT_TEXT, add_special_tokens=False)


def test_bpe_user_defined_tokens_match_hf(bpe_gguf):
    tok_dir, path, summary, _ = bpe_gguf("qwen2")
    hf = AutoTokenizer.from_pretrained(tok_dir)
    text = 'call <tool_call>{"name": "refund"}</tool_call> done'
    ids = llama_ids(load_vocab(path), text)
    assert ids == hf.encode(text, add_special_tokens=False)
    assert hf.convert_tokens_to_ids("<tool_call>") in ids


def test_bpe_special_tokens_and_template(bpe_gguf):
    tok_dir, path, summary, _ = bpe_gguf("smollm")
    hf = AutoTokenizer.from_pretrained(tok_dir)
    assert summary.special_ids["bos"] == hf.bos_token_id
    assert summary.special_ids["eos"] == hf.eos_token_id
    assert (summary.add_bos, summary.add_eos, summary.chat_template) == (False, False, True)
    llm = load_vocab(path)
    assert (llm.token_bos(), llm.token_eos()) == (hf.bos_token_id, hf.eos_token_id)
    assert llm.metadata["tokenizer.chat_template"] == hf.chat_template


@pytest.fixture(scope="session")
def spm_gguf(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab-spm")
    size = build_spm_tokenizer(root / "tok")
    summary = write_vocab_gguf(root / "vocab.gguf", root / "tok", size + 2)
    return root / "tok", root / "vocab.gguf", summary


def test_spm_tokenization_matches_sentencepiece(spm_gguf):
    tok_dir, path, summary = spm_gguf
    sp = spm.SentencePieceProcessor(model_file=str(tok_dir / "tokenizer.model"))
    llm = load_vocab(path)
    assert (summary.model, summary.add_bos) == ("llama", True)
    expected = sp.encode(VARIED_TEXT)
    assert len(expected) > 100
    assert llama_ids(llm, VARIED_TEXT) == expected
    assert llama_ids(llm, "Hi there", bos=True) == [sp.bos_id(), *sp.encode("Hi there")]
    assert (llm.token_bos(), llm.token_eos()) == (sp.bos_id(), sp.eos_id())


def test_spm_added_special_tokens_match_hf(spm_gguf):
    tok_dir, path, summary = spm_gguf
    hf = AutoTokenizer.from_pretrained(tok_dir)
    ids = llama_ids(load_vocab(path), CHAT_TEXT, special=True)
    assert ids == hf.encode(CHAT_TEXT, add_special_tokens=False)
    assert ids[0] == hf.convert_tokens_to_ids("<|im_start|>") == summary.n_tokens - 4


def test_spm_scores_and_types_from_sentencepiece(spm_gguf):
    tok_dir, path, _ = spm_gguf
    sp = spm.SentencePieceProcessor(model_file=str(tok_dir / "tokenizer.model"))
    reader = gguf.GGUFReader(path)
    scores = reader.fields["tokenizer.ggml.scores"]
    types = reader.fields["tokenizer.ggml.token_type"]
    for token_id in (0, 1, 3, 5, 300, sp.get_piece_size() - 1):
        assert float(scores.parts[scores.data[token_id]][0]) == pytest.approx(
            sp.get_score(token_id)
        )
    kinds = [int(types.parts[i][0]) for i in types.data]
    assert kinds[sp.unk_id()] == gguf.TokenType.UNKNOWN
    assert kinds[sp.bos_id()] == gguf.TokenType.CONTROL
    assert kinds[5] == gguf.TokenType.BYTE and sp.is_byte(5)
    assert kinds[-4:] == [gguf.TokenType.CONTROL] * 2 + [gguf.TokenType.UNUSED] * 2


# ---- errors ------------------------------------------------------------------------------------


def test_missing_tokenizer_is_a_source_error(tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "llama")
    with pytest.raises(SourceError, match="no tokenizer"):
        add_vocab(writer, tmp_path, 100)


def test_unreadable_tokenizer_json_is_a_source_error(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    writer = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "llama")
    with pytest.raises(SourceError, match="cannot read"):
        add_vocab(writer, tmp_path, 100)


def test_unknown_pretokenizer_is_a_source_error(bpe_gguf, tmp_path):
    tok_dir, _, _, size = bpe_gguf("llama3")
    data = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\p{L}+|\p{N}{1,2}|\s+"
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    writer = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "llama")
    with pytest.raises(SourceError, match="pre-tokenizer llama.cpp is not known"):
        add_vocab(writer, tmp_path, size)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"normalizer": {"type": "Lowercase"}}, "normalizes text with Lowercase"),
        (
            {
                "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581"},
                "decoder": {"type": "Metaspace", "replacement": "\u2581"},
            },
            # SentencePiece-style (a Metaspace), but one that splits at spaces.
            "splitting Metaspace",
        ),
        ({"added_tokens": [{"id": 3, "special": True}]}, "malformed tokenizer files"),
    ],
)
def test_unsupported_tokenizer_json_is_a_source_error(bpe_gguf, tmp_path, change, message):
    tok_dir, _, _, size = bpe_gguf("smollm")
    data = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8")) | change
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    writer = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "llama")
    with pytest.raises(SourceError, match=message):
        add_vocab(writer, tmp_path, size)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model_type": "unigram"}, "reproduces only SentencePiece BPE"),
        ({"normalization_rule_name": "nmt_nfkc"}, "normalizes text"),
    ],
)
def test_unsupported_sentencepiece_is_a_source_error(tmp_path, options, message):
    size = build_spm_tokenizer(tmp_path, **options)
    writer = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "llama")
    with pytest.raises(SourceError, match=message):
        add_vocab(writer, tmp_path, size)


def test_vocab_larger_than_model_is_a_source_error(bpe_gguf, tmp_path):
    tok_dir, _, _, size = bpe_gguf("smollm")
    writer = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "llama")
    with pytest.raises(SourceError, match="outside config.json's vocab_size"):
        add_vocab(writer, tok_dir, size - 10)


def test_corrupt_sentencepiece_model_is_a_source_error(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(b"\x00\x01 not a model")
    writer = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "llama")
    with pytest.raises(SourceError, match="SentencePiece"):
        add_vocab(writer, tmp_path, 100)


# ---- the real SmolLM2-135M-Instruct ------------------------------------------------------------

SUPPORT_CONVERSATION = [
    {"role": "system", "content": "You are a helpful customer-service agent for Acme."},
    {"role": "user", "content": "Hi! Where is my order #48213?"},
    {"role": "assistant", "content": "It shipped on 2024-03-15 and arrives in 3-5 days."},
    {"role": "user", "content": "Great, thanks 🚀 Can I return it later?"},
]


@pytest.fixture(scope="session")
def smollm2_vocab(smollm2_checkpoint, tmp_path_factory):
    """The SmolLM2 checkpoint's tokenizer as a vocab-only GGUF, with its summary."""
    config = json.loads((smollm2_checkpoint / "config.json").read_text(encoding="utf-8"))
    path = tmp_path_factory.mktemp("vocab-smollm2") / "vocab.gguf"
    summary = write_vocab_gguf(path, smollm2_checkpoint, config["vocab_size"])
    return path, summary


def _token_list(path: Path) -> list[str]:
    field = gguf.GGUFReader(path).fields["tokenizer.ggml.tokens"]
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


@pytest.mark.slow
def test_smollm2_tokenization_matches_hf_and_the_published_gguf(smollm2_checkpoint, smollm2_vocab):
    from converter.default_model import wheel_gguf

    path, summary = smollm2_vocab
    hf = AutoTokenizer.from_pretrained(smollm2_checkpoint)
    ours, published = load_vocab(path), load_vocab(wheel_gguf())
    for text in (VARIED_TEXT, CHAT_TEXT):
        expected = hf.encode(text, add_special_tokens=False)
        assert llama_ids(ours, text, special=True) == expected
        assert llama_ids(published, text, special=True) == expected
    assert llama_ids(ours, "Hi there", bos=True) == hf.encode("Hi there")
    assert summary.n_tokens == published.n_vocab() == 49152
    assert _token_list(path) == _token_list(wheel_gguf())
    assert (ours.token_bos(), ours.token_eos()) == (published.token_bos(), published.token_eos())


@pytest.mark.slow
def test_smollm2_chat_template_renders_like_hf(smollm2_checkpoint, smollm2_vocab):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    path, summary = smollm2_vocab
    hf = AutoTokenizer.from_pretrained(smollm2_checkpoint)
    llm = load_vocab(path)
    assert summary.chat_template
    formatter = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        bos_token=llm.detokenize([llm.token_bos()], special=True).decode("utf-8"),
        eos_token=llm.detokenize([llm.token_eos()], special=True).decode("utf-8"),
        add_generation_prompt=True,
    )
    prompt = formatter(messages=SUPPORT_CONVERSATION).prompt
    expected = hf.apply_chat_template(
        SUPPORT_CONVERSATION, tokenize=False, add_generation_prompt=True
    )
    assert prompt == expected
    assert prompt.startswith("<|im_start|>system\nYou are a helpful")
    assert prompt.endswith("<|im_start|>assistant\n")
