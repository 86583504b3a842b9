"""Conversations, messages and the per-turn latency log in SQLite; every SQL statement of the
store lives here, except the schema (chatbot.store.migrations) and what the FAQ bot's replies
came to (chatbot.store.faq_rows, a part of `Store`).

WAL with synchronous=NORMAL keeps a commit cheap (no fsync per commit) and lets readers run
while another process writes; a busy timeout makes a second writer wait instead of failing at
once. The schema grows through named migrations, each applied once, in its own transaction.
"""

import dataclasses
import hashlib
import json
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlite_utils import Database

from chatbot.errors import StoreError
from chatbot.paths import default_db_path, private_dir, private_file
from chatbot.store.busy import is_busy, retry_while_busy
from chatbot.store.faq_rows import FaqRows
from chatbot.store.migrations import migrations
from chatbot.store.records import (  # now: the timestamps every table keeps
    Conversation,
    ConversationSettings,
    FaqCounts,
    Handoff,
    Message,
    TurnRecord,
    now,
)
from chatbot.store.stats import ModelStats, model_stats

__all__ = [
    "Conversation",
    "ConversationSettings",
    "FaqCounts",
    "Handoff",
    "Message",
    "Store",
    "TurnRecord",
    "fts_query",
    "now",
]

DEFAULT_TITLE = "New conversation"
BUSY_TIMEOUT_S = 5.0


def fts_query(text: str) -> str | None:
    """User text as an FTS5 prefix query over its words; FTS syntax can never leak through."""
    words = re.findall(r"\w+", text)
    return " ".join(f'"{w}"*' for w in words) or None


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class Store(FaqRows):
    """The chat database. Thread-safe: the app's UI and worker threads share one Store."""

    def __init__(self, path: str | Path | None = None, *, busy_timeout_s: float = BUSY_TIMEOUT_S):
        self.path = Path(path) if path is not None and str(path) != ":memory:" else path
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.RLock()
        if path is None:
            self.path = default_db_path()
        if isinstance(self.path, Path):
            if self.path.is_dir():
                raise StoreError(f"{self.path} is a folder; give --db a file path")
            try:  # user-only: SQLite would create it readable by everyone
                private_file(private_dir(self.path.parent) / self.path.name)
            except OSError as exc:
                raise StoreError(f"cannot create {self.path}: {exc.strerror}") from exc
        try:
            conn = sqlite3.connect(str(self.path), timeout=busy_timeout_s, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        self.db = Database(conn)
        with self._guard("open"):
            self.db.execute("PRAGMA foreign_keys=ON")
            if isinstance(self.path, Path):
                retry_while_busy(self.db.enable_wal, busy_timeout_s)
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()

    def _migrate(self) -> None:
        """Apply pending migrations; BEGIN IMMEDIATE so two processes opening a new file agree.

        An up-to-date database is only read, so opening it never waits for another writer.
        """
        if not migrations.pending(self.db):
            return
        with self._write("update the database schema"):
            migrations.apply(self.db)

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Serialize threads and turn SQLite errors into a StoreError the user can act on."""
        with self._lock:
            try:
                yield
            except sqlite3.OperationalError as exc:
                if is_busy(exc):
                    raise StoreError(
                        f"database {self.path} is locked by another process (waited "
                        f"{self.busy_timeout_s:g} s to {action}); close the other chatbot "
                        "or use --db with another file"
                    ) from exc
                raise StoreError(f"cannot {action} in database {self.path}: {exc}") from exc
            except sqlite3.DatabaseError as exc:
                raise StoreError(
                    f"cannot {action} in {self.path}: {exc} (is it a chatbot database?)"
                ) from exc

    @contextmanager
    def _write(self, action: str) -> Iterator[None]:
        """One write transaction. BEGIN IMMEDIATE takes the write lock up front (waiting up to
        the busy timeout): a deferred transaction that reads first cannot wait for the lock
        and fails at once when another process wrote meanwhile."""
        with self._guard(action):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.db.rollback()
                raise
            self.db.commit()

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def applied_migrations(self) -> list[str]:
        """Names of the applied migrations, in order."""
        with self._guard("read migrations"):
            return [m.name for m in migrations.applied(self.db)]

    # Conversations

    def new_conversation(
        self,
        title: str = DEFAULT_TITLE,
        *,
        system_prompt: str | None = None,
        model: str | None = None,
    ) -> Conversation:
        stamp = now()
        row = {
            "title": title,
            "created_at": stamp,
            "updated_at": stamp,
            "system_prompt": system_prompt,
            "model": model,
        }
        with self._write("create a conversation"):
            cid = self.db["conversations"].insert(row).last_pk
        return Conversation(id=cid, **row)

    def get_conversation(self, conversation_id: int) -> Conversation:
        with self._guard("read a conversation"):
            rows = list(self.db["conversations"].rows_where("id = ?", [conversation_id]))
        if not rows:
            raise StoreError(f"no conversation {conversation_id}; `chatbot history` lists the ids")
        return Conversation(**rows[0])

    def list_conversations(self, search: str | None = None) -> list[Conversation]:
        """Newest first; with `search`, those whose title or any message contains the words."""
        sql = "SELECT * FROM conversations"
        params: dict[str, str] = {}
        if search and search.strip():
            params["like"] = _like_pattern(search.strip())
            sql += " WHERE title LIKE :like ESCAPE '\\'"
            query = fts_query(search)
            if query:
                params["fts"] = query
                sql += """ OR id IN (
                    SELECT m.conversation_id FROM messages m
                    JOIN messages_fts f ON f.rowid = m.id
                    WHERE messages_fts MATCH :fts)"""
        sql += " ORDER BY updated_at DESC, id DESC"
        with self._guard("list conversations"):
            return [Conversation(**row) for row in self.db.query(sql, params)]

    def rename_conversation(self, conversation_id: int, title: str) -> Conversation:
        title = title.strip()
        if not title:
            raise StoreError("a conversation title cannot be empty")
        self.get_conversation(conversation_id)
        with self._write("rename a conversation"):
            self.db["conversations"].update(conversation_id, {"title": title})
        return self.get_conversation(conversation_id)

    def delete_conversation(self, conversation_id: int) -> None:
        """Delete a conversation with its messages and turns."""
        self.get_conversation(conversation_id)
        with self._write("delete a conversation"):
            for table in ("turns", "messages"):
                self.db.execute(f"DELETE FROM {table} WHERE conversation_id = ?", [conversation_id])
            self.db.execute("DELETE FROM conversations WHERE id = ?", [conversation_id])

    def settings(self, conversation_id: int) -> ConversationSettings:
        """The conversation's settings (all None: the app's defaults)."""
        conversation = self.get_conversation(conversation_id)
        with self._guard("read conversation settings"):
            table = self.db["conversation_settings"]
            rows = list(table.rows_where("conversation_id = ?", [conversation_id]))
        row = rows[0] if rows else {}
        return ConversationSettings(
            system_prompt=conversation.system_prompt,
            **{k: row.get(k) for k in ("model_file", "temperature", "max_tokens", "mode")},
        )

    def save_settings(self, conversation_id: int, settings: ConversationSettings) -> None:
        """Keep the settings for the conversation's next turns, in one transaction."""
        self.get_conversation(conversation_id)
        row = {k: v for k, v in settings.__dict__.items() if k != "system_prompt"}
        with self._write("save conversation settings"):
            self.db["conversation_settings"].upsert(
                {"conversation_id": conversation_id, **row}, pk="conversation_id"
            )
            self.db.execute(
                "UPDATE conversations SET system_prompt = ? WHERE id = ?",
                [settings.system_prompt, conversation_id],
            )

    # Messages

    def messages(self, conversation_id: int) -> list[Message]:
        """The conversation as it stands: turns sent again (see `replace_messages`) left out."""
        with self._guard("read messages"):
            rows = self.db["messages"].rows_where(
                "conversation_id = ? AND replaced_at IS NULL", [conversation_id], order_by="id"
            )
            return [_message(row) for row in rows]

    def version(self) -> tuple[int, int]:
        """Changes since: equal twice when nothing was committed in between, by this
        connection or another process (SQLite's data_version), so a poll can skip its reads."""
        with self._guard("read the database version"):
            other = self.db.execute("PRAGMA data_version").fetchone()[0]
            return other, self.db.conn.total_changes

    def last_message_id(self, conversation_id: int) -> int | None:
        """The id of the conversation's newest message: whether someone else wrote to it."""
        sql = "SELECT max(id) FROM messages WHERE conversation_id = ? AND replaced_at IS NULL"
        with self._guard("read messages"):
            return self.db.execute(sql, [conversation_id]).fetchone()[0]

    def replace_messages(self, message_ids: list[int]) -> None:
        """Take messages out of their conversation (a turn regenerated or edited and resent);
        they stay in the database as alternatives (`alternatives`), never deleted."""
        with self._write("keep a turn as an alternative"):
            self.db.execute(
                "UPDATE messages SET replaced_at = ? WHERE replaced_at IS NULL AND id IN "
                f"({', '.join('?' * len(message_ids))})",
                [now(), *message_ids],
            )

    def alternatives(self, conversation_id: int) -> list[Message]:
        """The conversation's replaced messages, oldest first."""
        with self._guard("read alternatives"):
            rows = self.db["messages"].rows_where(
                "conversation_id = ? AND replaced_at IS NOT NULL", [conversation_id], order_by="id"
            )
            return [_message(row) for row in rows]

    def recent_prompts(self, limit: int = 100) -> list[str]:
        """What the user sent, across conversations: newest first, each text once."""
        sql = """SELECT content FROM messages WHERE role = 'user'
                 GROUP BY content ORDER BY MAX(id) DESC LIMIT ?"""
        with self._guard("read earlier messages"):
            return [row[0] for row in self.db.execute(sql, [limit]).fetchall()]

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        *,
        stopped: bool = False,
        sources: tuple[str, ...] | list[str] = (),
        handoff: bool = False,
        prompt_content: str | None = None,
        unsupported: tuple[str, ...] | list[str] = (),
        band: str | None = None,
        choices: tuple[str, ...] | list[str] = (),
        quoted: str | None = None,
        generated: str | None = None,
    ) -> Message:
        """Save one message and touch the conversation, in one transaction."""
        row = {
            "conversation_id": conversation_id,
            "role": role,
            "content": content,
            "prompt_content": prompt_content,
            "stopped": int(stopped),
            "sources": json.dumps(list(sources)),
            "handoff": int(handoff),
            "unsupported": json.dumps(list(unsupported)),
            "band": band,
            "choices": json.dumps(list(choices)),
            "quoted": quoted,
            "generated": generated,
        }
        with self._write("save a message"):
            return self._insert_message(row)

    def _insert_message(self, fields: dict) -> Message:
        """Within a write: the message (columns left out take their defaults), and the
        conversation touched."""
        row = {**_MESSAGE_DEFAULTS, **fields, "created_at": now()}
        mid = self.db["messages"].insert(row).last_pk
        self.db.execute(
            "UPDATE conversations SET updated_at = ? WHERE id = ?",
            [row["created_at"], row["conversation_id"]],
        )
        return _message({**row, "id": mid})

    # Latency log

    def add_turn(self, turn: TurnRecord) -> int:
        row = {k: v for k, v in turn.__dict__.items() if k != "id"}
        row["created_at"] = turn.created_at or now()
        with self._write("log a turn"):
            return self.db["turns"].insert(row).last_pk

    def turns(self, conversation_id: int | None = None) -> list[TurnRecord]:
        where, args = ("conversation_id = ?", [conversation_id]) if conversation_id else (None, [])
        with self._guard("read turns"):
            rows = self.db["turns"].rows_where(where, args, order_by="id")
            return [TurnRecord(**row) for row in rows]

    def stats(self) -> list[ModelStats]:
        """Per model file: turn count, p50/p95 of TTFT and tokens/s, CPU s per 1,000 tokens."""
        return model_stats(self.turns())

    # Customers of `chatbot serve`

    def add_customer_token(self, conversation_id: int, token: str) -> None:
        """Give a served conversation the token its customer holds (stored as a hash)."""
        row = {
            "token_hash": _token_hash(token),
            "conversation_id": conversation_id,
            "created_at": now(),
        }
        with self._write("save a customer token"):
            self.db["customer_tokens"].insert(row)

    def conversation_for_token(self, token: str) -> int | None:
        """The conversation a customer's token opens; None for any other token."""
        with self._guard("read a customer token"):
            rows = self.db.execute(
                "SELECT conversation_id FROM customer_tokens WHERE token_hash = ?",
                [_token_hash(token)],
            ).fetchall()
        return rows[0][0] if rows else None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _message(row: dict) -> Message:
    """A messages row as a Message: JSON lists as tuples, 0/1 as booleans."""
    values = {name: row.get(name) for name in _MESSAGE_FIELDS}
    for name in ("sources", "unsupported", "choices"):
        values[name] = tuple(json.loads(row.get(name) or "[]"))
    return Message(**{**values, "stopped": bool(row["stopped"]), "handoff": bool(row["handoff"])})


_MESSAGE_FIELDS = tuple(field.name for field in dataclasses.fields(Message))
# What a message row holds unless said otherwise (JSON lists empty, flags off).
_MESSAGE_DEFAULTS = {"stopped": 0, "handoff": 0, "sources": "[]", "unsupported": "[]",
                     "choices": "[]"}  # fmt: skip
