"""What the copy commands copy: a message's Markdown, or one of its code blocks.

Code blocks are found by the same Markdown parser the view renders with, so a fence inside a
list or a quote counts and a line of backticks inside a block does not end it.
"""

from dataclasses import dataclass

from markdown_it import MarkdownIt


@dataclass(frozen=True)
class CodeBlock:
    code: str
    language: str  # "" when the fence names none


def code_blocks(markdown: str) -> list[CodeBlock]:
    """The fenced and indented code blocks of a message, in order."""
    tokens = MarkdownIt("commonmark").parse(markdown)
    return [
        CodeBlock(token.content.rstrip("\n"), token.info.strip().split(" ")[0])
        for token in tokens
        if token.type in ("fence", "code_block")
    ]


class CodeCursor:
    """Walks code blocks newest first: each `next` returns the one before the last returned,
    wrapping around; a different set of blocks (a new reply, another message) starts over."""

    def __init__(self) -> None:
        self._blocks: list[CodeBlock] = []
        self._index = -1

    def next(self, blocks: list[CodeBlock]) -> tuple[CodeBlock, int] | None:
        """The next block and its number counted from the newest (1 = newest); None if none."""
        if not blocks:
            return None
        if blocks != self._blocks:
            self._blocks, self._index = blocks, -1
        self._index = (self._index + 1) % len(blocks)
        return blocks[len(blocks) - 1 - self._index], self._index + 1


def copied_code_note(block: CodeBlock, number: int, total: int) -> str:
    """The confirmation after copying a code block."""
    lines = block.code.count("\n") + 1
    language = f"{block.language}, " if block.language else ""
    which = f"code block {number} of {total}" if total > 1 else "the code block"
    return f"Copied {which} ({language}{lines} line{'s' if lines != 1 else ''})."
