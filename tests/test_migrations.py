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


def test_ray_migration_drops_the_gang_table_and_its_downgrade_restores_it(tmp_path):
    from alembic import command
    from sqlalchemy import create_engine, inspect

    from jobs.migrate import alembic_config, upgrade

    url = f"sqlite:///{tmp_path / 'gang.db'}"
    upgrade(url)

    def gang_schema():
        found = inspect(create_engine(url))
        return "job_nodes" in found.get_table_names(), "rendezvous" in [c["name"] for c in found.get_columns("jobs")]

    assert gang_schema() == (False, False)
    command.downgrade(alembic_config(url), "0006")
    assert gang_schema() == (True, True)
    command.upgrade(alembic_config(url), "head")
    assert gang_schema() == (False, False)
