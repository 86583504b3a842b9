"""What the FAQ bot's replies came to: an ask-back picked or declined, a hand-off declined or
resolved, and the counts and lists `chatbot stats` and `chatbot handoffs` print. A part of
`Store` (its SQL, kept apart so store.py stays small); the columns are migration 0007's
(chatbot.store.migrations).
"""

from chatbot.errors import StoreError
from chatbot.store.records import PERSON_BAND, FaqCounts, Handoff, now

# The customer's latest message before the hand-off `a`; with _OPENING, the latest one that
# was not a reply to an ask-back: "no" to "Did you mean ...?" is not the question to answer.
_LAST_USER = """(SELECT u.content FROM messages u
    WHERE u.conversation_id = a.conversation_id AND u.id < a.id AND u.role = 'user'
      AND u.replaced_at IS NULL{opening}
    ORDER BY u.id DESC LIMIT 1)"""
_OPENING = """
      AND COALESCE((SELECT p.band FROM messages p
                    WHERE p.conversation_id = u.conversation_id AND p.id < u.id
                      AND p.replaced_at IS NULL
                    ORDER BY p.id DESC LIMIT 1), '') NOT IN ('ask_back', 'ask_again')"""
_HANDOFFS = f"""
    SELECT a.conversation_id, a.id AS message_id, a.created_at, a.resolved_at,
           {_LAST_USER.format(opening=_OPENING)} AS question,
           {_LAST_USER.format(opening="")} AS last,
           EXISTS (SELECT 1 FROM customer_tokens t
                   WHERE t.conversation_id = a.conversation_id) AS served
    FROM messages a WHERE a.handoff = 1 AND a.replaced_at IS NULL"""


class FaqRows:
    """Mixed into `Store`: uses its `db`, `_guard`, `_write` and `_insert_message`."""

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

    def handoffs(
        self,
        *,
        unresolved: bool = False,
        message_id: int | None = None,
        conversation_id: int | None = None,
    ) -> list[Handoff]:
        """Hand-off replies with the question that caused each, newest first; `unresolved`
        leaves out those a person marked resolved, `message_id` picks one, `conversation_id`
        those of one conversation."""
        sql = _HANDOFFS + (" AND a.resolved_at IS NULL" if unresolved else "")
        sql += " AND a.id = :id" if message_id is not None else ""
        sql += " AND a.conversation_id = :cid" if conversation_id is not None else ""
        params = {"id": message_id, "cid": conversation_id}
        with self._guard("read hand-offs"):
            rows = list(self.db.query(sql + " ORDER BY a.id DESC", params))
        return [
            Handoff(
                conversation_id=row["conversation_id"],
                message_id=row["message_id"],
                question=row["question"] or row["last"] or "",
                reply=row["last"] if row["last"] not in (None, row["question"]) else "",
                created_at=row["created_at"],
                served=bool(row["served"]),
                resolved_at=row["resolved_at"],
            )
            for row in rows
        ]

    def waiting_conversations(self) -> frozenset[int]:
        """The conversations with a hand-off no person has resolved: one cheap scan, for the
        app's list to mark on its timer (`handoffs` also finds each one's question)."""
        sql = """SELECT DISTINCT conversation_id FROM messages
                 WHERE handoff = 1 AND resolved_at IS NULL AND replaced_at IS NULL"""
        with self._guard("read hand-offs"):
            return frozenset(row[0] for row in self.db.execute(sql).fetchall())

    def resolve_handoff(self, message_id: int, reply: str | None = None) -> Handoff:
        """Mark a hand-off resolved (once; the first time is kept) and return it. With
        `reply`, a person's answer goes into its conversation, where the customer reads it."""
        found = self.handoffs(message_id=message_id)
        if not found:
            raise StoreError(f"no hand-off {message_id}; `chatbot handoffs` lists them")
        if reply is not None and not reply.strip():
            raise StoreError("the reply is empty; write the answer the customer should read")
        with self._write("mark a hand-off resolved"):  # the reply and the mark, or neither
            if reply is not None:
                self._insert_message(
                    {"conversation_id": found[0].conversation_id, "role": "assistant",
                     "content": reply.strip(), "band": PERSON_BAND}
                )  # fmt: skip
            self.db.execute(
                "UPDATE messages SET resolved_at = COALESCE(resolved_at, ?) "
                "WHERE id = ? AND handoff = 1",
                [now(), message_id],
            )
        return self.handoffs(message_id=message_id)[0]
