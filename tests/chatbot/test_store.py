"""The SQLite store: migrations, CRUD, search, stats, locking and concurrent writers."""

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from chatbot.errors import StoreError
from chatbot.store import migrations as store_module
from chatbot.store.stats import percentile
from chatbot.store.store import Store, TurnRecord, fts_query

# Every migration, in order: a new one is added here as well as in chatbot.store.migrations.
ALL_MIGRATIONS = [
    "0001_initial",
    "0002_unsupported_facts",
    "0003_customer_tokens",
    "0004_handoff_resolved",
    "0005_replaced_messages",
    "0006_conversation_settings",
    "0007_faq_bands",
]


def turn(conversation_id, ttft, tps, tokens=10, cpu=0.5, model="m.gguf"):
    return TurnRecord(
        conversation_id=conversation_id,
        message_id=None,
        prompt_tokens=20,
        cached_tokens=5,
        completion_tokens=tokens,
        ttft_ms=ttft,
        decode_tps=tps,
        total_ms=100.0,
        cpu_seconds=cpu,
        model_file=model,
        quantization="Q4_K_M",
        threads=2,
        stop_reason="stop",
    )


def test_new_database_is_wal_with_migrations_recorded(store):
    assert store.db.journal_mode == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert store.applied_migrations() == ALL_MIGRATIONS
    assert {"conversations", "messages", "turns", "messages_fts"} <= set(store.db.table_names())


def test_later_migration_is_applied_once_in_order_and_keeps_data(db_path, monkeypatch):
    first = Store(db_path)
    cid = first.new_conversation("kept").id
    first.add_message(cid, "user", "hello")
    first.close()
    monkeypatch.setattr(
        store_module.migrations, "_migrations", list(store_module.migrations._migrations)
    )

    @store_module.migrations(name="0003_add_rating")
    def _add_rating(db):
        db["messages"].add_column("rating", int)

    second = Store(db_path)
    assert second.applied_migrations()[-1] == "0003_add_rating"
    assert "rating" in second.db["messages"].columns_dict
    assert [m.content for m in second.messages(cid)] == ["hello"]
    applied = second.applied_migrations()
    second.close()
    third = Store(db_path)  # already applied: not run again (add_column would fail)
    assert third.applied_migrations() == applied
    third.close()


def test_a_database_from_before_the_fact_check_gains_its_column(db_path, monkeypatch):
    with monkeypatch.context() as patch:
        first_only = store_module.migrations._migrations[:1]
        patch.setattr(store_module.migrations, "_migrations", first_only)
        old = Store(db_path)
        cid = old.new_conversation("old").id
        old.db.execute(  # the old schema's columns: what that version's add_message wrote
            "INSERT INTO messages (conversation_id, role, content, created_at, sources) "
            "VALUES (?, 'assistant', 'Sure, 3 days.', '2026-01-01T00:00:00', '[\"faq-1\"]')",
            [cid],
        )
        old.db.conn.commit()
        old.close()
    upgraded = Store(db_path)
    assert upgraded.applied_migrations() == ALL_MIGRATIONS
    assert [(m.content, m.unsupported) for m in upgraded.messages(cid)] == [("Sure, 3 days.", ())]
    upgraded.close()


def test_failed_migration_rolls_back_and_stays_pending(db_path, monkeypatch):
    Store(db_path).close()
    monkeypatch.setattr(
        store_module.migrations, "_migrations", list(store_module.migrations._migrations)
    )

    @store_module.migrations(name="0003_broken")
    def _broken(db):
        db.execute("CREATE TABLE half_done (x)")
        db.execute("THIS IS NOT SQL")

    with pytest.raises(StoreError):
        Store(db_path)
    conn = sqlite3.connect(db_path)  # look at the file without running migrations
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    names = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations")]
    conn.close()
    assert "half_done" not in tables
    assert names == ALL_MIGRATIONS


def test_conversation_crud(store):
    a = store.new_conversation("First", system_prompt="Be brief.", model="m.gguf")
    b = store.new_conversation("Second")
    store.add_message(a.id, "user", "hi")  # touches a: now the newest
    assert [c.id for c in store.list_conversations()] == [a.id, b.id]
    assert store.get_conversation(a.id).system_prompt == "Be brief."
    assert store.rename_conversation(b.id, "  Renamed ").title == "Renamed"
    with pytest.raises(StoreError, match="empty"):
        store.rename_conversation(b.id, "   ")
    store.add_turn(turn(a.id, 10, 100))
    store.delete_conversation(a.id)
    assert [c.id for c in store.list_conversations()] == [b.id]
    assert store.messages(a.id) == [] and store.turns(a.id) == []
    with pytest.raises(StoreError, match="no conversation"):
        store.get_conversation(a.id)


def test_messages_round_trip_flags_and_sources(store):
    cid = store.new_conversation().id
    store.add_message(
        cid, "user", "Where is my order?", prompt_content="FAQ...\nWhere is my order?"
    )
    store.add_message(
        cid,
        "assistant",
        "It ships today, in 2 weeks",
        stopped=True,
        sources=["faq-7", "faq-2"],
        unsupported=["2 weeks"],
    )
    store.add_message(cid, "assistant", "A person will help", handoff=True)
    user, reply, handoff = store.messages(cid)
    assert user.prompt_content.startswith("FAQ") and user.unsupported == ()
    assert reply.stopped and reply.sources == ("faq-7", "faq-2") and not reply.handoff
    assert reply.unsupported == ("2 weeks",)
    assert handoff.handoff and not handoff.stopped
    assert [(h.conversation_id, h.question) for h in store.handoffs()] == [
        (cid, "Where is my order?")
    ]


@pytest.mark.parametrize(
    "query",
    [
        '"',
        'pass"word',
        "NOT",
        "OR AND",
        "pass*",
        "(pass",
        "pass)",
        "title:pass",
        "-pass",
        "pass^",
        "NEAR(a b)",
        "100%",
        "a_b",
        "\\",
        "'; DROP TABLE messages; --",
    ],
)
def test_search_escapes_fts_and_like_syntax(store, query):
    cid = store.new_conversation("Billing").id
    store.add_message(cid, "user", "I forgot my password")
    store.list_conversations(query)  # never raises, whatever the text
    assert store.db["messages"].count == 1


def test_search_matches_words_prefixes_and_titles(store):
    pw = store.new_conversation("Login trouble").id
    store.add_message(pw, "user", "I forgot my password, help!")
    ship = store.new_conversation("Order 100% late").id
    store.add_message(ship, "user", "Where is my parcel?")
    assert [c.id for c in store.list_conversations("passw")] == [pw]
    assert [c.id for c in store.list_conversations("forgot password")] == [pw]
    assert [c.id for c in store.list_conversations("100%")] == [ship]
    assert [c.id for c in store.list_conversations("PARCEL")] == [ship]
    assert store.list_conversations("nothing-like-this") == []
    assert fts_query('a "b" c*') == '"a"* "b"* "c"*'
    assert fts_query("!!!") is None


def test_stats_percentiles_and_cpu_per_thousand_tokens(store):
    cid = store.new_conversation().id
    ttfts = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
    for i, ttft in enumerate(ttfts):
        store.add_turn(turn(cid, ttft, 100.0 + i, tokens=100, cpu=0.25))
    store.add_turn(turn(cid, 5.0, 50.0, tokens=50, cpu=1.0, model="other.gguf"))
    by_model = {s.model_file: s for s in store.stats()}
    m = by_model["m.gguf"]
    assert m.turns == 10
    assert m.ttft_p50_ms == pytest.approx(55.0)
    assert m.ttft_p95_ms == pytest.approx(95.5)
    assert m.tps_p50 == pytest.approx(104.5)
    assert m.cpu_seconds_per_1k_tokens == pytest.approx(2.5)  # 2.5 s over 1,000 tokens
    assert by_model["other.gguf"].cpu_seconds_per_1k_tokens == pytest.approx(20.0)
    assert percentile([], 50) == 0.0 and percentile([3.0], 95) == 3.0


def test_threads_sharing_one_store_lose_nothing(store):
    cid = store.new_conversation().id

    def write(n):
        for i in range(25):
            store.add_message(cid, "user", f"thread {n} message {i}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.messages(cid)) == 100


WRITER = textwrap.dedent(
    """
    import sys
    from chatbot.store.store import Store
    s = Store(sys.argv[1])
    cid = s.new_conversation(sys.argv[2]).id
    for i in range(100):
        s.add_message(cid, "user", f"{sys.argv[2]} {i}")
    """
)


def test_two_processes_writing_at_once_lose_nothing(db_path):
    """Both open a brand-new file at the same moment: migrations once, every message kept."""
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(db_path), name], stderr=subprocess.PIPE)
        for name in ("alpha", "beta")
    ]
    for p in procs:
        assert p.wait(timeout=60) == 0, p.stderr.read().decode()
    s = Store(db_path)
    assert s.applied_migrations() == ALL_MIGRATIONS
    assert sorted(c.title for c in s.list_conversations()) == ["alpha", "beta"]
    assert s.db["messages"].count == 200
    s.close()


HOLDER = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("COMMIT")
    """
)


@contextmanager
def locked_by_another_process(db_path, seconds: float) -> Iterator[None]:
    """A child process holds an exclusive lock on the (migrated) database for `seconds`."""
    Store(db_path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db_path), str(seconds)], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline().strip() == b"locked"
        yield
    finally:
        holder.kill()
        holder.wait()


def test_database_locked_by_another_process_waits_then_says_so(db_path):
    with locked_by_another_process(db_path, 30):
        s = Store(db_path, busy_timeout_s=0.5)  # up to date: opening only reads
        start = time.monotonic()
        with pytest.raises(StoreError, match="locked by another process") as err:
            s.new_conversation("blocked")
        assert time.monotonic() - start >= 0.4  # it waited before giving up
        assert "--db" in str(err.value)
        s.close()
    s = Store(db_path)
    assert s.list_conversations() == []  # nothing half-written
    s.close()


def test_waiting_writer_succeeds_when_the_lock_is_released_in_time(db_path):
    with locked_by_another_process(db_path, 0.5):
        s = Store(db_path, busy_timeout_s=10)
        assert s.new_conversation("waited").title == "waited"
        s.close()


def test_not_a_database_or_a_folder_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x00garbage" * 500)
    with pytest.raises(StoreError, match="chatbot database"):
        Store(junk)
    with pytest.raises(StoreError, match="folder"):
        Store(tmp_path)


def test_in_memory_store_works(tmp_path):
    s = Store(":memory:")
    cid = s.new_conversation().id
    s.add_message(cid, "user", "x")
    assert len(s.messages(cid)) == 1


def test_a_step_sqlite_refuses_without_waiting_is_tried_again(db_path):
    """SQLite answers "locked" at once where waiting could deadlock; the step is retried."""
    from chatbot.store.busy import retry_while_busy

    conn = sqlite3.connect(db_path)
    attempts = []

    def step():
        attempts.append(1)
        if len(attempts) < 3:
            raise sqlite3.OperationalError("database is locked")
        return conn.execute("PRAGMA journal_mode=wal").fetchone()[0]

    assert retry_while_busy(step, timeout_s=5) == "wal"
    assert len(attempts) == 3


def test_a_step_still_refused_after_the_timeout_fails_and_other_errors_at_once():
    from chatbot.store.busy import retry_while_busy

    calls = {"locked": 0, "broken": 0}

    def refused(kind: str, message: str):
        calls[kind] += 1
        raise sqlite3.OperationalError(message)

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        retry_while_busy(lambda: refused("locked", "database is locked"), timeout_s=0.2)
    assert 2 <= calls["locked"] <= 11  # tried again, every 0.02 s, until 0.2 s had passed
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        retry_while_busy(lambda: refused("broken", "no such table: x"), timeout_s=5)
    assert calls["broken"] == 1


def test_the_version_changes_only_when_something_is_committed(db_path):
    """The app's list polls `version()` and reads the list only when it moved."""
    s = Store(db_path)
    first = s.version()
    s.list_conversations()
    assert s.version() == first  # reads change nothing
    cid = s.new_conversation("Mine").id
    after_own = s.version()
    assert after_own != first
    other = Store(db_path)  # another process, as `chatbot serve` would be
    other.add_message(cid, "user", "Hello?")
    other.close()
    assert s.version() != after_own
    s.close()
