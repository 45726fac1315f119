"""The embedded SQLite database under a held write lock: lease upkeep gives up within its bound,
the pooled connection goes back to the default wait, and commits are short (WAL, no fsync)."""
from __future__ import annotations

import sqlite3
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from jobs.db import SQLITE_BUSY_MS, bounded_lock_wait, get_engine, session_scope


@pytest.fixture
def url(tmp_path):
    url = f"sqlite:///{tmp_path / 'locks.db'}"
    with session_scope(url) as session:
        session.execute(text("create table t (a integer)"))
    yield url
    get_engine(url).dispose()


def test_connections_use_wal_without_a_sync_per_commit(url):
    with session_scope(url) as session:
        assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert session.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        assert session.execute(text("PRAGMA busy_timeout")).scalar() == SQLITE_BUSY_MS


def test_bounded_lock_wait_gives_up_on_a_held_lock_and_the_pool_gets_the_default_back(url):
    holder = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0)
    holder.execute("BEGIN IMMEDIATE")  # a writer stopped inside its transaction
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="locked"):
            with session_scope(url) as session:
                bounded_lock_wait(session, seconds=0.3)
                session.execute(text("insert into t values (1)"))
        assert 0.25 <= time.monotonic() - started < 5
    finally:
        holder.rollback()
        holder.close()
    with session_scope(url) as session:  # the same pooled connection, checked in and out again
        assert session.execute(text("PRAGMA busy_timeout")).scalar() == SQLITE_BUSY_MS
        session.execute(text("insert into t values (2)"))
    with session_scope(url) as session:
        assert session.execute(text("select a from t")).scalars().all() == [2]
