"""Alembic's migrations create exactly the tables in jobs/tables.py."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from jobs.db import get_engine
from jobs.tables import Base


def test_migrations_match_models(service):
    with get_engine(service.database_url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent_and_creates_default_project(service):
    from sqlalchemy import text

    from jobs.migrate import upgrade

    upgrade(service.database_url)
    with get_engine(service.database_url).connect() as conn:
        assert conn.execute(text("select name from projects where id = 'prj_default'")).scalar() == "default"
