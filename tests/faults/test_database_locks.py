"""A writer frozen inside its transaction (a paused VM, SIGSTOP): lease upkeep gives up within its
bound on both databases, SQLite's pooled connection gets its default wait back, and PostgreSQL ends
the frozen session, which frees its row locks for the sweepers."""
from __future__ import annotations

import sqlite3
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from jobs.db import (POSTGRES_IDLE_TRANSACTION_MS, POSTGRES_STATEMENT_MS, SQLITE_BUSY_MS, bounded_lock_wait,
                     get_engine, session_scope)
from tests.conftest import postgres_database, reachable


@pytest.fixture
def sqlite_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'locks.db'}"
    with session_scope(url) as session:
        session.execute(text("create table t (a integer)"))
    yield url
    get_engine(url).dispose()


@pytest.fixture
def postgres_url():
    if not reachable("127.0.0.1", 5432):
        pytest.skip("PostgreSQL (127.0.0.1:5432) is not reachable")
    url, drop = postgres_database()
    with session_scope(url) as session:
        session.execute(text("create table t (id integer primary key, a integer)"))
        session.execute(text("insert into t values (1, 0)"))
    yield url
    get_engine(url).dispose()
    drop()


def test_sqlite_uses_wal_without_a_sync_per_commit(sqlite_url):
    with session_scope(sqlite_url) as session:
        assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert session.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        assert session.execute(text("PRAGMA busy_timeout")).scalar() == SQLITE_BUSY_MS


def test_sqlite_bounded_wait_gives_up_and_the_pool_gets_the_default_back(sqlite_url):
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), timeout=0)
    holder.execute("BEGIN IMMEDIATE")  # a writer stopped inside its transaction
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="locked"):
            with session_scope(sqlite_url) as session:
                bounded_lock_wait(session, seconds=0.3)
                session.execute(text("insert into t values (1)"))
        assert 0.25 <= time.monotonic() - started < 5
    finally:
        holder.rollback()
        holder.close()
    with session_scope(sqlite_url) as session:  # the same pooled connection, checked in and out again
        assert session.execute(text("PRAGMA busy_timeout")).scalar() == SQLITE_BUSY_MS
        session.execute(text("insert into t values (2)"))
    with session_scope(sqlite_url) as session:
        assert session.execute(text("select a from t")).scalars().all() == [2]


def test_postgres_sessions_have_statement_and_idle_transaction_timeouts(postgres_url):
    with session_scope(postgres_url) as session:
        assert session.execute(text("SHOW statement_timeout")).scalar() == f"{POSTGRES_STATEMENT_MS // 60_000}min"
        assert session.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == \
            f"{POSTGRES_IDLE_TRANSACTION_MS // 60_000}min"


def test_postgres_frees_the_row_lock_of_a_frozen_transaction(postgres_url):
    """The frozen holder's timeout is shortened to 0.5 s here; the service's is 2 minutes."""
    holder = get_engine(postgres_url).connect()
    holder.execute(text("SET idle_in_transaction_session_timeout = '500ms'"))
    holder.commit()
    holder.execute(text("select a from t where id = 1 for update"))  # then frozen: no commit comes
    try:
        with pytest.raises(OperationalError, match="lock timeout"):
            with session_scope(postgres_url) as session:
                bounded_lock_wait(session, seconds=0.2)
                session.execute(text("update t set a = 1 where id = 1"))
        time.sleep(1.0)  # past the holder's idle-in-transaction timeout: the server ends its session
        with session_scope(postgres_url) as session:
            bounded_lock_wait(session, seconds=2.0)
            assert session.execute(text("update t set a = 2 where id = 1")).rowcount == 1
        with pytest.raises(OperationalError, match="idle-in-transaction") as woken:
            holder.execute(text("select 1"))  # the frozen client wakes to a lost connection, which it retries
        assert woken.value.connection_invalidated
    finally:
        holder.invalidate()
        holder.close()
