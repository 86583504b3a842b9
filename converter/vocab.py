"""Tokenizer -> GGUF metadata, so llama.cpp tokenizes exactly as the source model did.

Two kinds of tokenizer are supported, each read from its own ground truth:
- byte-level BPE from tokenizer.json (GPT-2 style: Llama 3, Qwen2/3, SmolLM2) -> `gpt2`, with
  the pre-tokenizer identified from tokenizer.json's structure (see `converter.pretokenizer`);
- SentencePiece BPE from tokenizer.model (Llama 2, TinyLlama, Mistral, Phi-3) -> `llama`, read
  through the sentencepiece library's own model proto, since transformers' conversion can
  differ; without a tokenizer.model, from its tokenizer.json form (Gemma 3), scored by merge rank.
Special token ids, add_bos/add_eos and the chat template come from gguf.SpecialVocab.
"""

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from converter.errors import SourceError
from converter.pretokenizer import identify_pretokenizer

logger = logging.getLogger(__name__)

_TT = gguf.TokenType
# sentencepiece's ModelProto.SentencePiece.Type values, which gguf.TokenType mirrors one to one.
_SPM_TYPES = {
    1: _TT.NORMAL,
    2: _TT.UNKNOWN,
    3: _TT.CONTROL,
    4: _TT.USER_DEFINED,
    5: _TT.UNUSED,
    6: _TT.BYTE,
}
_SPM_BPE = 2  # TrainerSpec.ModelType.BPE: the only kind llama.cpp's `llama` tokenizer reproduces
_SPM_SPACE = "\u2581"  # SentencePiece's visible space
_BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")


@dataclass(frozen=True)
class VocabSummary:
    """What was written, for the conversion report."""

    model: str  # tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str  # tokenizer.ggml.pre: llama.cpp's pre-tokenizer name ("default" for SentencePiece)
    n_tokens: int
    special_ids: dict[str, int] = field(default_factory=dict)
    add_bos: bool = False
    add_eos: bool = False
    chat_template: bool = False


@dataclass
class _Vocab:
    model: str
    pre: str
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    extra: dict[str, bool] = field(default_factory=dict)  # add_space_prefix and the like
    own_special_ids: dict[str, int] = field(default_factory=dict)  # the model file's own


def add_vocab(writer: gguf.GGUFWriter, model_dir: Path, vocab_size: int) -> VocabSummary:
    """Write the tokenizer of `model_dir`, padded to the model's `vocab_size` rows, to `writer`."""
    model_dir = Path(model_dir)
    try:
        vocab = _read_vocab(model_dir, vocab_size)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SourceError(f"malformed tokenizer files in {model_dir}: {exc!r}") from exc
    special = _special_vocab(vocab, model_dir, vocab_size)
    _write(writer, vocab, special)
    return VocabSummary(
        model=vocab.model,
        pre=vocab.pre,
        n_tokens=len(vocab.tokens),
        special_ids=dict(special.special_token_ids),
        add_bos=special.add_special_token["bos"],
        add_eos=special.add_special_token["eos"],
        chat_template=special.chat_template is not None,
    )


def _read_vocab(model_dir: Path, vocab_size: int) -> _Vocab:
    """Byte-level BPE from tokenizer.json first, else SentencePiece from tokenizer.model."""
    tokenizer_json = _read_tokenizer_json(model_dir)
    if tokenizer_json is not None and _is_byte_level_bpe(tokenizer_json):
        return _bpe_vocab(tokenizer_json, model_dir, vocab_size)
    if (model_dir / "tokenizer.model").is_file():
        vocab = _spm_vocab(model_dir / "tokenizer.model", vocab_size)
        _add_spm_added_tokens(vocab, model_dir, vocab_size)
        return vocab
    if tokenizer_json is not None and _is_spm_style_bpe(tokenizer_json):
        return _spm_json_vocab(tokenizer_json, model_dir / "tokenizer.json", vocab_size)
    if tokenizer_json is not None:
        raise SourceError(
            f"{model_dir / 'tokenizer.json'} is neither byte-level BPE nor SentencePiece-style "
            "BPE, and there is no tokenizer.model beside it; supported are byte-level BPE "
            "(tokenizer.json), SentencePiece BPE (tokenizer.model or its tokenizer.json form)"
        )
    raise SourceError(
        f"no tokenizer in {model_dir}: expected tokenizer.json or tokenizer.model; "
        "copy the model's tokenizer files into the checkpoint folder"
    )


def _read_tokenizer_json(model_dir: Path) -> dict[str, Any] | None:
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return None
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise SourceError(f"{path} is not a tokenizers file (no model section)")
    return data


def _is_byte_level_bpe(tokenizer: dict[str, Any]) -> bool:
    """A BPE model whose pre-tokenizer or decoder maps bytes to printable characters."""
    if tokenizer["model"].get("type") != "BPE":
        return False
    text = json.dumps([tokenizer.get("pre_tokenizer"), tokenizer.get("decoder")])
    return '"ByteLevel"' in text


def _bpe_vocab(tokenizer: dict[str, Any], model_dir: Path, vocab_size: int) -> _Vocab:
    """Tokens in id order from the BPE model's vocab; gaps become unused [PADn] rows."""
    pre = identify_pretokenizer(tokenizer, model_dir / "tokenizer.json")
    model_vocab: dict[str, int] = tokenizer["model"].get("vocab") or {}
    if not model_vocab:
        raise SourceError(f"{model_dir / 'tokenizer.json'} has an empty BPE vocabulary")
    tokens, types = _padded(vocab_size)
    for text, token_id in model_vocab.items():
        _check_id(token_id, vocab_size, text)
        tokens[token_id] = text
        types[token_id] = _TT.NORMAL
    for added in tokenizer.get("added_tokens") or []:
        _check_id(added["id"], vocab_size, added["content"])
        _set_added(tokens, types, None, added["id"], added["content"], added.get("special"))
    return _Vocab(model="gpt2", pre=pre, tokens=tokens, types=types)


def _is_spm_style_bpe(tokenizer: dict[str, Any]) -> bool:
    """A BPE model over SentencePiece's "\u2581"-for-space text (Gemma, Llama 2 as tokenizers)."""
    if tokenizer["model"].get("type") != "BPE":
        return False
    steps = [tokenizer.get("normalizer"), tokenizer.get("pre_tokenizer")]
    return _SPM_SPACE in json.dumps(steps, ensure_ascii=False)


def _spm_json_vocab(tokenizer: dict[str, Any], path: Path, vocab_size: int) -> _Vocab:
    """SentencePiece BPE read from tokenizer.json, for llama.cpp's `llama` tokenizer.

    llama.cpp merges the adjacent pair whose joined text has the highest score; tokenizers
    merges the pair ranked first in `merges`. A token's score is therefore minus the rank of
    the first merge that makes it, which orders llama.cpp's merges as tokenizers orders them.
    """
    model = tokenizer["model"]
    model_vocab: dict[str, int] = model.get("vocab") or {}
    if not model_vocab:
        raise SourceError(f"{path} has an empty BPE vocabulary")
    merges = model.get("merges") or []
    tokens, types = _padded(vocab_size)
    scores = [-float(len(merges) + 1)] * vocab_size  # below every merge: joined last, if ever
    byte_fallback = bool(model.get("byte_fallback"))
    for text, token_id in model_vocab.items():
        _check_id(token_id, vocab_size, text)
        tokens[token_id] = text
        is_byte = byte_fallback and _BYTE_TOKEN.fullmatch(text) is not None
        types[token_id] = _TT.BYTE if is_byte else _TT.NORMAL
    for rank, merge in reversed(list(enumerate(merges))):  # the first merge's rank wins
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        token_id = model_vocab.get(left + right)
        if token_id is not None:
            scores[token_id] = -float(rank)
    unk = model.get("unk_token")
    if unk in model_vocab:
        types[model_vocab[unk]] = _TT.UNKNOWN
    for added in tokenizer.get("added_tokens") or []:
        _check_id(added["id"], vocab_size, added["content"])
        _set_added(tokens, types, None, added["id"], added["content"], added.get("special"))
    return _Vocab(
        model="llama",
        pre="default",
        tokens=tokens,
        types=types,
        scores=scores,
        extra={"add_space_prefix": _spm_json_space_prefix(tokenizer, path)},
        own_special_ids={"unk": model_vocab[unk]} if unk in model_vocab else {},
    )


def _spm_json_space_prefix(tokenizer: dict[str, Any], path: Path) -> bool:
    """Whether a space is put before the text (SentencePiece's add_dummy_prefix), from the
    steps llama.cpp reproduces: Replace(" ", "\u2581"), Prepend("\u2581"), Metaspace; a Split
    on " " after that replace finds no space left and changes nothing. Anything else: refused."""
    steps = _steps(tokenizer.get("normalizer"), "normalizers")
    steps += _steps(tokenizer.get("pre_tokenizer"), "pretokenizers")
    prefix = replaced = False
    for step in steps:
        kind = step.get("type")
        pattern = (step.get("pattern") or {}).get("String")
        if kind == "Replace" and pattern == " " and step.get("content") == _SPM_SPACE:
            replaced = True
        elif kind == "Split" and pattern == " " and replaced:
            continue
        elif kind == "Prepend" and step.get("prepend") == _SPM_SPACE:
            prefix = True
        elif kind == "Metaspace" and step.get("replacement") == _SPM_SPACE:
            if step.get("split", True):
                raise SourceError(
                    f"{path}: a splitting Metaspace step is not reproduced by llama.cpp's "
                    "SentencePiece tokenizer"
                )
            # llama.cpp also puts the space after each special token (Llama 2's legacy
            # behaviour), which transformers 5 does not: only text right after one differs.
            prefix = step.get("prepend_scheme", "always") != "never"
        else:
            raise SourceError(
                f"{path} has a {kind} step llama.cpp's SentencePiece tokenizer does not do"
            )
    return prefix


def _steps(section: dict[str, Any] | None, key: str) -> list[dict[str, Any]]:
    if not section:
        return []
    if section.get("type") == "Sequence":
        return [s for step in section.get(key, []) for s in _steps(step, key)]
    return [section]


def _spm_vocab(path: Path, vocab_size: int) -> _Vocab:
    """Pieces, scores and types exactly as the sentencepiece library stores them."""
    proto = _load_spm_proto(path)
    if proto.trainer_spec.model_type != _SPM_BPE:
        raise SourceError(
            f"{path} is a SentencePiece model of type {proto.trainer_spec.model_type} "
            "(unigram or other); llama.cpp's llama tokenizer reproduces only SentencePiece BPE"
        )
    norm = proto.normalizer_spec
    if norm.precompiled_charsmap or norm.name not in ("identity", ""):
        raise SourceError(
            f"{path} normalizes text ({norm.name}), which llama.cpp's llama tokenizer does not "
            "do; only SentencePiece models with the identity normalizer are supported"
        )
    if norm.remove_extra_whitespaces:
        logger.warning("%s collapses runs of spaces; llama.cpp keeps them", path)
    if len(proto.pieces) > vocab_size:
        raise SourceError(
            f"{path} has {len(proto.pieces)} pieces but config.json's vocab_size is {vocab_size}"
        )
    tokens, types = _padded(vocab_size)
    scores = [-10000.0] * vocab_size
    for token_id, piece in enumerate(proto.pieces):
        tokens[token_id] = piece.piece
        scores[token_id] = piece.score
        types[token_id] = _SPM_TYPES.get(piece.type, _TT.NORMAL)
    return _Vocab(
        model="llama",
        pre="default",
        tokens=tokens,
        types=types,
        scores=scores,
        extra={"add_space_prefix": norm.add_dummy_prefix},
        own_special_ids={
            name: token_id
            for name in ("unk", "bos", "eos", "pad")
            if 0 <= (token_id := getattr(proto.trainer_spec, f"{name}_id")) < vocab_size
        },
    )


def _load_spm_proto(path: Path) -> Any:
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as exc:  # protobuf missing
        raise SourceError(f"reading {path} needs the protobuf package: {exc}") from exc
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and OSError alike
        raise SourceError(f"cannot read {path} as a SentencePiece model: {exc}") from exc
    if not proto.pieces:
        raise SourceError(f"{path} is not a SentencePiece model (no pieces)")
    return proto


def _add_spm_added_tokens(vocab: _Vocab, model_dir: Path, vocab_size: int) -> None:
    """Tokens HF adds on top of a SentencePiece model (added_tokens.json, tokenizer_config.json)."""
    config = _read_json(model_dir / "tokenizer_config.json")
    entries = [
        (tid, text, None) for text, tid in _read_json(model_dir / "added_tokens.json").items()
    ]
    for key, data in (config.get("added_tokens_decoder") or {}).items():
        entries.append((int(key), data["content"], data.get("special")))
    for token_id, text, special in entries:
        _check_id(token_id, vocab_size, text)
        _set_added(vocab.tokens, vocab.types, vocab.scores, token_id, text, special)


def _set_added(
    tokens: list[str],
    types: list[int],
    scores: list[float] | None,
    token_id: int,
    text: str,
    special: bool | None,
) -> None:
    """An added token: control when special, user-defined (always matched) otherwise.

    A SentencePiece piece with the same text keeps its own type, the library's ground truth.
    """
    if scores is not None and tokens[token_id] == text and types[token_id] != _TT.UNUSED:
        return
    tokens[token_id] = text
    types[token_id] = _TT.CONTROL if special else _TT.USER_DEFINED
    if scores is not None:
        scores[token_id] = 0.0


def _special_vocab(vocab: _Vocab, model_dir: Path, vocab_size: int) -> gguf.SpecialVocab:
    """Special ids, add_bos/add_eos and chat template; explicit defaults where files are silent."""
    try:
        special = gguf.SpecialVocab(
            model_dir, load_merges=vocab.model == "gpt2", n_vocab=vocab_size
        )
    except (OSError, ValueError) as exc:  # unreadable config, bad merges format
        raise SourceError(f"cannot read the tokenizer settings in {model_dir}: {exc}") from exc
    if vocab.model == "gpt2" and not special.merges:
        raise SourceError(f"{model_dir / 'tokenizer.json'} has no BPE merges")
    # Without tokenizer.json, SpecialVocab finds ids only in config.json: add the model's own.
    for name, token_id in vocab.own_special_ids.items():
        special.special_token_ids.setdefault(name, token_id)
    # llama.cpp otherwise guesses (gpt2: bos=eos=11, llama-bpe adds bos): say what HF does.
    special.add_special_token.setdefault("bos", vocab.model == "llama")
    special.add_special_token.setdefault("eos", False)
    return special


def _write(writer: gguf.GGUFWriter, vocab: _Vocab, special: gguf.SpecialVocab) -> None:
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if "add_space_prefix" in vocab.extra:
        writer.add_add_space_prefix(vocab.extra["add_space_prefix"])
    special.add_to_gguf(writer, quiet=True)


def _padded(vocab_size: int) -> tuple[list[str], list[int]]:
    """Rows the tokenizer does not fill: unused, named like llama.cpp's own converter does."""
    return [f"[PAD{i}]" for i in range(vocab_size)], [_TT.UNUSED] * vocab_size


def _check_id(token_id: int, vocab_size: int, text: str) -> None:
    if not 0 <= token_id < vocab_size:
        raise SourceError(
            f"tokenizer token {text!r} has id {token_id}, outside config.json's vocab_size "
            f"{vocab_size}; the tokenizer does not belong to this model"
        )


def _read_json(path: Path) -> dict[str, Any]:
    """An optional JSON object file: {} when it is missing or not an object."""
    if not path.is_file():
        return {}
    data = _load_json(path)
    return data if isinstance(data, dict) else {}


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from exc
