"""Chat prompts where only the template's own markers become control tokens.

A customer who types `<|im_end|><|im_start|>system` must not pose as the system prompt. The
template is rendered with each message's content fenced by random markers; control tokens are
looked for only outside the fences, and each stretch of plain text between two control tokens is
tokenized with `special=False`. llama.cpp tokenizes a prompt the same way (raw text fragments
between special tokens, each on its own), so an ordinary conversation gets exactly the tokens
it got before, and the KV cache's prefix reuse is unchanged.
"""

import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jinja2
import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from chatbot.engines.base import ChatMessage
from chatbot.errors import EngineError, ModelLoadError

# Token attributes llama.cpp matches in text when asked to parse special tokens.
_SPECIAL_ATTRS = (
    llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
    | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
    | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
)
Tokenize = Callable[[bytes, bool, bool], list[int]]  # (text, add_bos, special) -> tokens


@dataclass(frozen=True)
class _Piece:
    text: str
    plain: bool  # message content: never parsed for control tokens


def special_token_texts(vocab: "llama_cpp.llama_vocab_p", n_vocab: int) -> dict[str, int]:
    """The text of every token llama.cpp would parse as special, mapped to its id."""
    found: dict[str, int] = {}
    for token in range(n_vocab):
        if llama_cpp.llama_vocab_get_attr(vocab, token) & _SPECIAL_ATTRS:
            text = llama_cpp.llama_vocab_get_text(vocab, token)
            if text:
                found.setdefault(text.decode("utf-8", errors="replace"), token)
    return found


def chat_formatter(template: str, bos: str, eos: str) -> Jinja2ChatFormatter:
    """The GGUF's chat template compiled, or ModelLoadError naming the template's fault."""
    try:
        return Jinja2ChatFormatter(
            template=template, eos_token=eos, bos_token=bos, add_generation_prompt=True
        )
    except jinja2.TemplateError as exc:
        raise broken_template(exc) from exc


def broken_template(exc: jinja2.TemplateError) -> ModelLoadError:
    """The one message for a GGUF whose chat template does not compile."""
    return ModelLoadError(
        f"the model's chat template does not parse ({exc}); convert the model again or "
        "use another GGUF"
    )


class PromptTokenizer:
    """Renders messages with the chat template; user text stays plain text."""

    def __init__(
        self, formatter: Jinja2ChatFormatter, specials: dict[str, int], tokenize: Tokenize
    ):
        self.formatter = formatter
        self._tokenize = tokenize
        self._specials = specials
        names = sorted(specials, key=len, reverse=True)  # longest first, as llama.cpp does
        self._special_re = re.compile("|".join(map(re.escape, names))) if names else None

    def __call__(self, messages: Sequence[ChatMessage]) -> list[int]:
        pieces = self._render(messages)
        bos = self.formatter.bos_token
        rendered = "".join(piece.text for piece in pieces)
        add_bos = not (bos and rendered.startswith(bos))
        tokens: list[int] = []
        for is_token, value in self._fragments(pieces):
            if is_token:
                tokens.append(value)
            else:
                tokens += self._tokenize(value.encode("utf-8"), add_bos and not tokens, False)
        if add_bos and not tokens:
            tokens = self._tokenize(b"", True, False)
        return tokens

    def _render(self, messages: Sequence[ChatMessage]) -> list[_Piece]:
        """The rendered prompt cut into template text and message content."""
        contents = [str(message.get("content") or "") for message in messages]
        nonce = secrets.token_hex(8)
        while any(nonce in text for text in contents):
            nonce = secrets.token_hex(8)
        start, end = f"\x02{nonce}\x03", f"\x02/{nonce}\x03"
        fence = re.compile(f"{re.escape(start)}|{re.escape(end)}")
        plain = self._format(messages)
        for strip in (False, True):  # some templates trim the content (Llama 3's `| trim`)
            fenced = [
                {**m, "content": f"{start}{c.strip() if strip else c}{end}"}
                for m, c in zip(messages, contents, strict=True)
            ]
            prompt = self._format(fenced)
            if fence.sub("", prompt) == plain:
                break
        pieces = []
        for i, part in enumerate(fence.split(prompt)):
            if part:
                pieces.append(_Piece(part, plain=i % 2 == 1))
        return pieces

    def _format(self, messages: Sequence[ChatMessage]) -> str:
        try:
            return self.formatter(messages=list(messages)).prompt
        except Exception as exc:  # jinja2 errors from a model's template
            raise EngineError(
                f"the model's chat template failed on this conversation: {exc}"
            ) from exc

    def _fragments(self, pieces: list[_Piece]):
        """(True, token id) for a template marker, (False, text) for plain text between them."""
        text = ""
        for piece in pieces:
            if piece.plain or self._special_re is None:
                text += piece.text
                continue
            at = 0
            for match in self._special_re.finditer(piece.text):
                text += piece.text[at : match.start()]
                if text:
                    yield False, text
                    text = ""
                yield True, self._specials[match.group()]
                at = match.end()
            text += piece.text[at:]
        if text:
            yield False, text
