"""What the FAQ bot's replies came to: an ask-back picked or declined, a hand-off declined,
and the counts `chatbot stats` and `chatbot handoffs` print. A part of `Store` (its SQL, kept
apart so store.py stays small); the columns are migration 0007's (chatbot.store.migrations).
"""

from chatbot.store.records import FaqCounts, now


class FaqRows:
    """Mixed into `Store`: uses its `db`, `_guard` and `_write`."""

    def record_outcome(self, message_id: int, outcome: str, choice: str | None = None) -> None:
        """What became of an ask-back or a hand-off (see migration 0007). A hand-off the
        customer declined is marked resolved: nobody needs to act on it."""
        with self._write("record what came of a reply"):
            self.db.execute(
                "UPDATE messages SET outcome = ?, choice = ? WHERE id = ?",
                [outcome, choice, message_id],
            )
            if outcome == "declined":
                self.db.execute(
                    "UPDATE messages SET resolved_at = COALESCE(resolved_at, ?) "
                    "WHERE id = ? AND handoff = 1",
                    [now(), message_id],
                )

    def faq_counts(self) -> FaqCounts:
        """Answers, ask-backs by outcome, and hand-offs, over every saved reply."""
        sql = """
            SELECT
              SUM(band = 'answer'), SUM(band = 'answer' AND quoted IS NOT NULL),
              SUM(band = 'ask_back'),
              SUM(band = 'ask_back' AND outcome = 'picked'),
              SUM(band = 'ask_back' AND outcome = 'declined'),
              SUM(band = 'ask_back' AND outcome = 'handoff'),
              SUM(band = 'ask_back' AND outcome = 'new_question'),
              SUM(band = 'ask_back' AND outcome IS NULL),
              SUM(handoff = 1), SUM(handoff = 1 AND outcome = 'declined')
            FROM messages WHERE role = 'assistant'"""
        with self._guard("count the FAQ bot's replies"):
            row = self.db.execute(sql).fetchone()
        return FaqCounts(*(value or 0 for value in row))
