"""SQLAlchemy engines and sessions, created lazily per database URL."""
from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from typing import Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker


# Connections kept open per process. The API serves each request on one of its threadpool's
# threads with a session of its own: a pool smaller than the requests in flight makes every
# request past it open a connection and close it again (SQLite: a file open and its pragmas;
# PostgreSQL: a backend process), which cost more than the query itself.
POOL_SIZE = 16
MAX_OVERFLOW = 16
SQLITE_BUSY_MS = 30_000  # how long a SQLite statement waits for another process's write lock
POSTGRES_STATEMENT_MS = 120_000
POSTGRES_IDLE_TRANSACTION_MS = 120_000
IDLE_TRANSACTION_SQLSTATE = "25P03"  # PostgreSQL's SQLSTATE for a session it ended for idling in a transaction


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW,
                               connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record):
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # WAL's recommended level: a commit appends to the log without an fsync (0.03 ms here, not
            # 0.45), which also shortens every write lock. A killed process loses nothing; a power
            # loss may roll back the last commits, never corrupt the file.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "checkin")
        def _default_wait(conn, _record):  # undo a bounded_lock_wait before the next user
            if conn is not None:
                conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")

        return engine
    # A dead server or a stuck statement fails within bounds instead of holding a worker forever.
    # A client frozen inside a transaction (a paused VM, SIGSTOP) keeps its row locks: its TCP
    # connection stays open, so only the server's idle-in-transaction timeout ends the session and
    # lets the sweepers expire its lease.
    options = (f"-c statement_timeout={POSTGRES_STATEMENT_MS}"
               f" -c idle_in_transaction_session_timeout={POSTGRES_IDLE_TRANSACTION_MS}")
    engine = create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW,
                           pool_timeout=30, connect_args={"connect_timeout": 10, "options": options})

    @event.listens_for(engine, "handle_error")
    def _session_ended(context):  # the woken client: a lost connection, retried like any other
        if getattr(context.original_exception, "sqlstate", None) == IDLE_TRANSACTION_SQLSTATE:
            context.is_disconnect = True
            return OperationalError(context.statement, context.parameters, context.original_exception,
                                    connection_invalidated=True)

    return engine


@lru_cache(maxsize=8)
def _factory(url: str) -> sessionmaker:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = _factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def db_now(session: Session) -> datetime:
    """The database's clock: every host's leases and every sweeper's cutoffs use this one, so
    clock skew between hosts cannot make a live lease look stale. (SQLite is one host's file: its
    clock is that host's.)"""
    if session.get_bind().dialect.name == "postgresql":
        return session.scalar(text("select clock_timestamp()"))
    return datetime.now(timezone.utc)


def bounded_lock_wait(session: Session, seconds: float = 2.0) -> None:
    """Lease upkeep (heartbeats, sweeps, releases) waits at most `seconds` for a row lock: a child
    stopped inside its short fenced transaction must not stall its worker, whose watchdog then
    kills it (which frees the lock)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text(f"SET LOCAL lock_timeout = '{int(seconds * 1000)}ms'"))
    elif dialect == "sqlite":  # the whole file is locked: a stopped writer blocks every other one
        session.execute(text(f"PRAGMA busy_timeout = {int(seconds * 1000)}"))


def retrying(fn, attempts: int = 10, delay: float = 0.5):
    """Run fn(), retrying while the database is unreachable (a restart, a network blip)."""
    for attempt in range(attempts):
        try:
            return fn()
        except OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(delay * (1 + attempt))
