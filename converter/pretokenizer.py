"""Name a byte-level BPE tokenizer's pre-tokenizer the way llama.cpp knows it.

llama.cpp does not read tokenizer.json's pre-tokenizer: it picks hard-coded regexes from the
name in `tokenizer.ggml.pre`. llama.cpp's own converter finds that name from a hash of the token
ids of a probe string; here it is read from the pre-tokenizer's structure (its steps, regexes and
flags) instead, so a tokenizer is never given a name whose splitting rules differ from its own.
"""

import json
from pathlib import Path
from typing import Any

from converter.errors import SourceError

# The regexes as each family's tokenizer.json spells them.
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Pre-tokenizer steps (as `_step_key` writes them) -> llama.cpp's name for the same splitting.
KNOWN_PRETOKENIZERS: dict[tuple[tuple[Any, ...], ...], str] = {
    # Llama 3, 3.1, 3.2: one regex (digits in groups of up to 3), then bytes.
    (("Split", _LLAMA3_REGEX, "Isolated", False), ("ByteLevel", False, False)): "llama-bpe",
    # Qwen2, Qwen2.5, Qwen3: Llama 3's regex with single digits.
    (("Split", _QWEN2_REGEX, "Isolated", False), ("ByteLevel", False, False)): "qwen2",
    # SmolLM, SmolLM2 (StarCoder's layout): every digit alone, then GPT-2's regex.
    (("Digits", True), ("ByteLevel", False, True)): "smollm",
    # GPT-2 and models that kept its byte-level pre-tokenizer unchanged.
    (("ByteLevel", False, True),): "gpt-2",
}

# Normalizers llama.cpp's BPE path can skip: NFC leaves already composed text unchanged (Qwen2).
_HARMLESS_NORMALIZERS = (None, "NFC")


def identify_pretokenizer(tokenizer: dict[str, Any], path: Path) -> str:
    """llama.cpp's `tokenizer.ggml.pre` name for tokenizer.json's pre-tokenizer, or SourceError."""
    normalizer = (tokenizer.get("normalizer") or {}).get("type")
    if normalizer not in _HARMLESS_NORMALIZERS:
        raise SourceError(
            f"{path} normalizes text with {normalizer}, which llama.cpp's BPE tokenizer does "
            "not do; this tokenizer is not supported"
        )
    steps = _flatten(tokenizer.get("pre_tokenizer"))
    key = tuple(_step_key(step) for step in steps)
    name = KNOWN_PRETOKENIZERS.get(key)
    if name is None:
        described = ", ".join(step.get("type", "?") for step in steps) or "none"
        known = ", ".join(sorted(KNOWN_PRETOKENIZERS.values()))
        raise SourceError(
            f"{path} has a pre-tokenizer llama.cpp is not known to match ({described}); "
            f"supported: {known}"
        )
    return name


def _flatten(pre_tokenizer: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The steps of a (possibly nested) Sequence in order."""
    if not pre_tokenizer:
        return []
    if pre_tokenizer.get("type") == "Sequence":
        return [s for step in pre_tokenizer.get("pretokenizers", []) for s in _flatten(step)]
    return [pre_tokenizer]


def _step_key(step: dict[str, Any]) -> tuple[Any, ...]:
    """What decides how a step splits text; offsets-only flags (trim_offsets) are left out."""
    kind = step.get("type")
    if kind == "Split":
        pattern = step.get("pattern") or {}
        regex = pattern.get("Regex", f"literal:{pattern.get('String')}")
        return (kind, regex, step.get("behavior"), bool(step.get("invert")))
    if kind == "ByteLevel":
        return (kind, bool(step.get("add_prefix_space")), step.get("use_regex", True))
    if kind == "Digits":
        return (kind, bool(step.get("individual_digits")))
    return (kind, json.dumps(step, sort_keys=True))
