"""Tiny tokenizers, trained in a second from built-in text, for the converter's fast tests.

Each builder writes a folder that `transformers.AutoTokenizer.from_pretrained(dest)` loads and
returns the final vocabulary size (the number of ids, added tokens included): use it as the tiny
model's `vocab_size`. The byte-level BPE styles mirror the pre-tokenizers of real model families
so the converter's pre-tokenizer identification meets the same tokenizer.json structure.
"""

import json
from pathlib import Path
from typing import Any

# Varied text so a few hundred merges exist: prose, code, digits, CJK, emoji, whitespace runs.
_CORPUS = """\
Hello! How can I help you today? I'd like to check the status of my order, please.
Your order #48213 was shipped on 2024-03-15 and should arrive within 3-5 business days.
We're sorry for the delay. You'll receive a refund of $19.99 to your card ending in 4242.
The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG.
Customer service is open Monday to Friday, 9:00 to 17:30. Call us at +1 (555) 010-2030.
def greet(name: str) -> str:
    \"\"\"Return a friendly greeting.\"\"\"
    return f"Hello, {name}!"

for i in range(10):
    if i % 2 == 0:
        print(i, i ** 2, [x for x in range(i)])
\tindented with a tab\t\tand two
    four spaces        eight spaces
{"id": 123, "name": "Widget", "price": 4.50, "tags": ["blue", "small"]}
Café, naïve, résumé, Straße, Ångström, señor, façade, coöperate.
Привет, как дела? Всё хорошо, спасибо. Доставка занимает три дня.
你好，世界！我想在苹果公司工作。请问您的订单号是多少？谢谢您的耐心等待。
こんにちは、元気ですか？ありがとうございます。
안녕하세요, 주문을 확인해 드리겠습니다.
Emoji test: 🚀 🦙🦙 ✅ 😀 👍🏽 ❤️ 🎉🎉🎉
Numbers: 0 1 12 123 1234 12345 3.14159 1e-9 1,000,000 007
Punctuation: ... !!! ??? --- === ''' \"\"\" ``` (a) [b] {c} <d> a+b=c; x*y/z.
I've been told he's there, you're sure? We'll see; I'm not sure they'd like it.
Thank you for contacting support. Is there anything else I can help you with?
Returns are accepted within 30 days. Please keep your receipt and the original packaging.
"""

# The pre-tokenizer regexes published in each family's own tokenizer.json.
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Per style: special tokens (in id order), the bos/eos/pad names, where specials sit
# (front: ids 0.. like SmolLM2; back: after the learned vocab like Llama 3 and Qwen2),
# non-special added tokens, and whether a bos is added to every encoding.
_STYLES = {
    "smollm": {
        "specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "bos": "<|im_start|>",
        "eos": "<|im_end|>",
        "pad": "<|endoftext|>",
        "front": True,
        "user_tokens": [],
        "add_bos": False,
    },
    "llama3": {
        "specials": ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"],
        "bos": "<|begin_of_text|>",
        "eos": "<|im_end|>",
        "pad": None,
        "front": False,
        "user_tokens": [],
        "add_bos": True,
    },
    "qwen2": {
        "specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "bos": None,
        "eos": "<|im_end|>",
        "pad": "<|endoftext|>",
        "front": False,
        "user_tokens": ["<tool_call>", "</tool_call>"],
        "add_bos": False,
    },
}

BPE_STYLES = tuple(_STYLES)


def _pre_tokenizer(style: str):
    from tokenizers import Regex, pre_tokenizers

    if style == "smollm":
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    regex = LLAMA3_REGEX if style == "llama3" else QWEN2_REGEX
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _post_processor(bos: str | None, bos_id: int | None, add_bos: bool):
    from tokenizers import processors

    if add_bos and bos is not None:
        return processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    return processors.ByteLevel(trim_offsets=False)


def build_bpe_tokenizer(dest: Path, style: str, vocab_size: int = 512) -> int:
    """Train a byte-level BPE in `style` ("llama3", "qwen2", "smollm") into dest; return its size.

    The size is the total number of ids (learned tokens plus added ones), at most vocab_size.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    spec = _STYLES[style]
    n_added = len(spec["specials"]) + len(spec["user_tokens"])
    tok = Tokenizer(models.BPE(ignore_merges=style == "llama3"))
    if style == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = _pre_tokenizer(style)
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size - (0 if spec["front"] else n_added),
        special_tokens=spec["specials"] if spec["front"] else [],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines(keepends=True), trainer=trainer)
    if not spec["front"]:
        tok.add_special_tokens(spec["specials"])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in spec["user_tokens"]])
    bos_id = tok.token_to_id(spec["bos"]) if spec["bos"] else None
    tok.post_processor = _post_processor(spec["bos"], bos_id, spec["add_bos"])

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=spec["bos"],
        eos_token=spec["eos"],
        pad_token=spec["pad"],
        unk_token=None,
        # Llama 3's templates start with the bos text; ChatML ones (SmolLM2, Qwen2) do not.
        chat_template=("{{ bos_token }}" if spec["add_bos"] else "") + CHATML_TEMPLATE,
        add_bos_token=spec["add_bos"],
        add_eos_token=False,
    )
    dest.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(dest)
    return tok.get_vocab_size(with_added_tokens=True)


def build_spm_tokenizer(dest: Path, vocab_size: int = 512, **trainer_options: Any) -> int:
    """Train a Llama-style SentencePiece BPE (byte fallback, split digits) into dest.

    Writes tokenizer.model and a tokenizer_config.json naming LlamaTokenizer, with a ChatML
    template whose two markers are added special tokens after the model's pieces; returns the
    total size: vocab_size pieces (SentencePiece fills it exactly) plus those 2 tokens.
    `trainer_options` override the Llama-like trainer settings (tests of unsupported models).
    """
    import sentencepiece as spm

    dest.mkdir(parents=True, exist_ok=True)
    options = {
        "model_type": "bpe",
        "byte_fallback": True,
        "split_digits": True,
        "character_coverage": 1.0,
        "normalization_rule_name": "identity",
        "remove_extra_whitespaces": False,
        "allow_whitespace_only_pieces": True,
        "add_dummy_prefix": True,
        "unk_id": 0,
        "bos_id": 1,
        "eos_id": 2,
        "pad_id": -1,
        "hard_vocab_limit": True,
        "minloglevel": 2,
    }
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS.splitlines()),
        model_prefix=str(dest / "tokenizer"),
        vocab_size=vocab_size,
        **(options | trainer_options),
    )
    (dest / "tokenizer.vocab").unlink(missing_ok=True)
    size = spm.SentencePieceProcessor(model_file=str(dest / "tokenizer.model")).get_piece_size()
    # ChatML markers as HF adds them to a SentencePiece model: special tokens after its pieces.
    added = {
        str(size + i): {"content": text, "special": True, "normalized": False}
        for i, text in enumerate(["<|im_start|>", "<|im_end|>"])
    }
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": None,
        "add_bos_token": True,
        "add_eos_token": False,
        # Llama 2's behaviour, which llama.cpp shares: a space prefix after each special token.
        "legacy": True,
        "chat_template": CHATML_TEMPLATE,
        "added_tokens_decoder": added,
    }
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return size + len(added)
