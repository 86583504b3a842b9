"""The database schema as ordered, named migrations (sqlite-utils' `Migrations`).

Each is one small function, applied once, in order, in its own transaction; `Store` applies the
pending ones when it opens a file. Add a column by appending a migration with the next number:
never edit or renumber one that has shipped.
"""

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("chatbot")


@migrations(name="0001_initial")
def _initial(db: Database) -> None:
    """Conversations, messages (with full-text search) and the turns latency log."""
    db.execute("""
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            system_prompt TEXT,
            model TEXT
        )""")
    db.execute("""
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id),
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            prompt_content TEXT,
            created_at TEXT NOT NULL,
            stopped INTEGER NOT NULL DEFAULT 0,
            sources TEXT NOT NULL DEFAULT '[]',
            handoff INTEGER NOT NULL DEFAULT 0
        )""")
    db.execute("CREATE INDEX messages_conversation ON messages(conversation_id, id)")
    db.execute("""
        CREATE TABLE turns (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id),
            message_id INTEGER REFERENCES messages(id),
            prompt_tokens INTEGER NOT NULL,
            cached_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            ttft_ms REAL NOT NULL,
            decode_tps REAL NOT NULL,
            total_ms REAL NOT NULL,
            cpu_seconds REAL NOT NULL,
            model_file TEXT NOT NULL,
            quantization TEXT NOT NULL,
            threads INTEGER NOT NULL,
            stop_reason TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX turns_model ON turns(model_file)")
    db["messages"].enable_fts(["content"], create_triggers=True)


@migrations(name="0002_unsupported_facts")
def _unsupported_facts(db: Database) -> None:
    """The facts a grounded reply states that its FAQ article does not (chatbot.faq.facts)."""
    db.execute("ALTER TABLE messages ADD COLUMN unsupported TEXT NOT NULL DEFAULT '[]'")


@migrations(name="0003_customer_tokens")
def _customer_tokens(db: Database) -> None:
    """Served conversations: a customer holds an unguessable token, never the row id.

    Only the token's SHA-256 is kept, so a copy of the database does not open anyone's
    conversation through the API. Deleting the conversation deletes its token.
    """
    db.execute("""
        CREATE TABLE customer_tokens (
            token_hash TEXT PRIMARY KEY,
            conversation_id INTEGER NOT NULL UNIQUE
                REFERENCES conversations(id) ON DELETE CASCADE,
            created_at TEXT NOT NULL
        )""")


@migrations(name="0004_handoff_resolved")
def _handoff_resolved(db: Database) -> None:
    """When a person marked a hand-off resolved (the support team's list)."""
    db.execute("ALTER TABLE messages ADD COLUMN resolved_at TEXT")


@migrations(name="0005_replaced_messages")
def _replaced_messages(db: Database) -> None:
    """A turn sent again (regenerated, or edited and resent) stays as an alternative: its
    messages get `replaced_at` and leave the conversation and later prompts, never deleted."""
    db.execute("ALTER TABLE messages ADD COLUMN replaced_at TEXT")


@migrations(name="0006_conversation_settings")
def _conversation_settings(db: Database) -> None:
    """Per-conversation settings from the app (its system prompt stays on `conversations`);
    NULL means the app's default, from its flags and config file."""
    db.execute("""
        CREATE TABLE conversation_settings (
            conversation_id INTEGER PRIMARY KEY
                REFERENCES conversations(id) ON DELETE CASCADE,
            model_file TEXT,
            temperature REAL,
            max_tokens INTEGER,
            mode TEXT
        )""")


@migrations(name="0007_faq_bands")
def _faq_bands(db: Database) -> None:
    """What the FAQ bot did with each reply (chatbot.faq.policy), for the support team's counts.

    band: "answer", "ask_back" (asked which entry was meant), "ask_again" (the same choices
    after an unclear pick), "handoff", "person_request", "small_talk", "handoff_reply" (the
    customer's yes/no after a hand-off), "choice_help". choices: the entry ids an ask-back
    offered. outcome / choice: set later on an ask-back ("picked" with the entry id,
    "declined", "handoff", "new_question") or a hand-off ("declined"). quoted: why the
    article's own text was shown instead of the model's reply, which `generated` keeps.
    """
    for column in ("band", "outcome", "choice", "quoted", "generated"):
        db.execute(f"ALTER TABLE messages ADD COLUMN {column} TEXT")
    db.execute("ALTER TABLE messages ADD COLUMN choices TEXT NOT NULL DEFAULT '[]'")
