"""Stopping a reply that has started to repeat itself.

Small models at low temperature fall into loops ("If you have a return policy, you can return
items within 30 days. If you have a return policy, ..."), and without a stop they fill every
token allowed. A stretch of MIN_REPEAT_CHARS characters that the reply already contains is a
loop, not prose: the reply is stopped there and kept up to where the repeat began. Watching the
text rather than the tokens serves the embedded and the remote engine alike.
"""

MIN_REPEAT_CHARS = 60  # about a dozen words: prose repeats shorter phrases, loops whole ones
MAX_TRIM_CHARS = 200  # how far back a cut may move to end at a sentence or line end
MAX_WORD_CHARS = 20
_SENTENCE_ENDS = (".", "!", "?")


class RepetitionGuard:
    """Feed it the streamed text; `looping` turns true once the reply repeats itself."""

    def __init__(self, min_chars: int = MIN_REPEAT_CHARS):
        self.min_chars = min_chars
        self.text = ""
        self.loop_start: int | None = None  # where the repeated copy begins, once seen

    @property
    def looping(self) -> bool:
        return self.loop_start is not None

    def add(self, chunk: str) -> bool:
        """Add one streamed piece; True once `min_chars` characters in a row occurred before."""
        before = len(self.text)
        self.text += chunk
        if self.loop_start is None:
            # Check each end inside the new piece: the cut is then where the repeat began.
            for end in range(max(before, self.min_chars) + 1, len(self.text) + 1):
                start = end - self.min_chars
                if self.text.find(self.text[start:end]) < start:
                    self.loop_start = self._word_end(start)
                    break
        return self.looping

    def _word_end(self, index: int) -> int:
        """`index`, moved past the rest of a word it falls inside ("empir|e." -> "empire|."),
        unless no word ends within MAX_WORD_CHARS (a loop of one letter is no word)."""
        text = self.text
        end = index
        while 0 < end < len(text) and text[end - 1].isalnum() and text[end].isalnum():
            end += 1
        return end if end - index <= MAX_WORD_CHARS and end < len(text) else index

    def kept(self) -> str:
        """The reply without the repeated copy (all of it when there is no loop), ending at a
        sentence or line end when one is near, not in the middle of a sentence."""
        if self.loop_start is None:
            return self.text
        kept = self.text[: self.loop_start]
        if self.text[self.loop_start : self.loop_start + 1] in _SENTENCE_ENDS:
            kept += self.text[self.loop_start]  # the copy began with the first one's full stop
        elif not kept.rstrip().endswith(_SENTENCE_ENDS):
            cut = max(kept.rfind(mark) for mark in (". ", "! ", "? ", "\n"))
            if cut >= 0 and len(kept) - cut <= MAX_TRIM_CHARS:
                kept = kept[: cut + 1]
        return kept.rstrip()
