"""Key scopes: an admin key manages its project's keys, a use key submits and reads and gets 403 on
key management; keys are capped per project; one project's keys never reach another's."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient

from api.__main__ import main as api_main
from api.app import create_app
from jobs.db import session_scope
from jobs.keys import create_key
from jobs.migrate import alembic_config
from tests.conftest import TINY_PRETRAIN


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keys(service):
    """Project A's admin key (made by the operator, as `create-key` does) and a use key it made;
    project B's admin key."""
    with session_scope(service.database_url) as session:
        _, admin_a = create_key(session, "a", "owner")
        _, admin_b = create_key(session, "b", "owner")
    with TestClient(create_app(service.model_copy(update={"auth": True}))) as api:
        made = api.post("/v1/keys", json={"name": "ci"}, headers=bearer(admin_a))
        assert made.status_code == 201 and made.json()["scope"] == "use", made.text
    return {"admin_a": admin_a, "use_a": made.json()["key"], "use_a_id": made.json()["id"], "admin_b": admin_b}


def test_a_use_key_submits_and_reads_but_cannot_manage_keys(service, keys):
    use, admin = bearer(keys["use_a"]), bearer(keys["admin_a"])
    with TestClient(create_app(service.model_copy(update={"auth": True}))) as api:
        assert api.post("/v1/jobs", json=TINY_PRETRAIN, headers=use).status_code == 201
        assert api.get("/v1/jobs", headers=use).json()["total"] == 1
        owner_id = next(k["id"] for k in api.get("/v1/keys", headers=admin).json()["data"] if k["name"] == "owner")
        # the leaked use key can neither mint a key nor lock out the owner
        for method, path, body in (("GET", "/v1/keys", None), ("POST", "/v1/keys", {"name": "mine"}),
                                   ("POST", "/v1/keys", {"name": "mine", "scope": "admin"}),
                                   ("POST", f"/v1/keys/{owner_id}/disable", None),
                                   ("DELETE", f"/v1/keys/{owner_id}", None)):
            refused = api.request(method, path, json=body, headers=use)
            assert refused.status_code == 403, (method, path, refused.text)
            assert "scope is 'use'" in refused.json()["detail"]
        listed = api.get("/v1/keys", headers=admin).json()["data"]
        assert len(listed) == 2 and all(not k["disabled"] for k in listed)
        assert {k["name"]: k["scope"] for k in listed} == {"owner": "admin", "ci": "use"}
        # the owner revokes the use key: refused from then on
        assert api.post(f"/v1/keys/{keys['use_a_id']}/disable", headers=admin).json()["disabled"] is True
        assert api.get("/v1/jobs", headers=use).status_code == 401
        assert api.get("/v1/jobs", headers=admin).status_code == 200


def test_delete_key_refuses_it_and_frees_its_place_in_the_quota(service, keys):
    admin = bearer(keys["admin_a"])
    with TestClient(create_app(service.model_copy(update={"auth": True, "max_keys_per_project": 3}))) as api:
        third = api.post("/v1/keys", json={"name": "third", "scope": "admin"}, headers=admin)
        assert third.status_code == 201 and third.json()["scope"] == "admin"
        over = api.post("/v1/keys", json={"name": "fourth"}, headers=admin)
        assert over.status_code == 429, over.text
        assert "key quota" in over.json()["detail"] and "DARKMATTER_MAX_KEYS_PER_PROJECT" in over.json()["detail"]
        assert api.get("/v1/jobs", headers=bearer(third.json()["key"])).status_code == 200
        gone = api.delete(f"/v1/keys/{third.json()['id']}", headers=admin)
        assert gone.status_code == 200 and gone.json() == {"id": third.json()["id"], "deleted": True}
        assert api.get("/v1/jobs", headers=bearer(third.json()["key"])).status_code == 401
        assert third.json()["id"] not in {k["id"] for k in api.get("/v1/keys", headers=admin).json()["data"]}
        assert api.delete(f"/v1/keys/{third.json()['id']}", headers=admin).status_code == 404
        assert api.post("/v1/keys", json={"name": "fourth"}, headers=admin).status_code == 201
        assert api.delete("/v1/keys/dm_not-an-id", headers=admin).status_code == 422
        assert api.post("/v1/keys", json={"scope": "root"}, headers=admin).status_code == 422


def test_one_projects_admin_key_cannot_see_disable_or_delete_anothers_keys(service, keys):
    a, b = bearer(keys["admin_a"]), bearer(keys["admin_b"])
    with TestClient(create_app(service.model_copy(update={"auth": True}))) as api:
        b_ids = [k["id"] for k in api.get("/v1/keys", headers=b).json()["data"]]
        assert keys["use_a_id"] not in b_ids and len(b_ids) == 1
        assert keys["use_a_id"] not in str(api.get("/v1/keys", headers=b).json())
        for key_id in b_ids:
            for call in (lambda: api.post(f"/v1/keys/{key_id}/disable", headers=a),
                         lambda: api.delete(f"/v1/keys/{key_id}", headers=a)):
                refused = call()
                assert refused.status_code == 404 and "not found in this project" in refused.json()["detail"]
        for call in (lambda: api.post(f"/v1/keys/{keys['use_a_id']}/disable", headers=b),
                     lambda: api.delete(f"/v1/keys/{keys['use_a_id']}", headers=b)):
            assert call().status_code == 404
        assert api.get("/v1/jobs", headers=b).status_code == 200
        assert api.get("/v1/jobs", headers=bearer(keys["use_a"])).status_code == 200


def test_the_server_command_bootstraps_an_admin_key(sqlite_service, monkeypatch, capsys):
    monkeypatch.setenv("DARKMATTER_HOME", str(sqlite_service.home))
    monkeypatch.setenv("DARKMATTER_DATABASE_URL", sqlite_service.database_url)
    monkeypatch.setattr("jobs.logs.configure", lambda *args: None)  # leave the test run's logging alone
    api_main(["create-key", "--project", "team", "--name", "first"])
    printed = dict(line.split(" ", 1) for line in capsys.readouterr().out.splitlines())
    assert printed["scope"] == "admin"
    api_main(["create-key", "--project", "team", "--scope", "use"])
    use_key = dict(line.split(" ", 1) for line in capsys.readouterr().out.splitlines())["key"]
    with TestClient(create_app(sqlite_service.model_copy(update={"auth": True}))) as api:
        listed = api.get("/v1/keys", headers=bearer(printed["key"]))
        assert listed.status_code == 200 and sorted(k["scope"] for k in listed.json()["data"]) == ["admin", "use"]
        assert api.get("/v1/keys", headers=bearer(use_key)).status_code == 403


def test_keys_made_before_scopes_migrate_as_admin(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0004")
    engine = sa.create_engine(url)
    with engine.begin() as db:
        db.execute(sa.text("INSERT INTO projects (id, name, created_at) VALUES ('prj_old', 'old', '2026-01-01')"))
        db.execute(sa.text("INSERT INTO api_keys (id, project_id, key_hash, prefix, name, disabled, created_at) "
                           "VALUES ('key_old', 'prj_old', :h, 'dm_abcde', '', 0, '2026-01-01')"), {"h": "0" * 64})
    command.upgrade(alembic_config(url), "head")
    with engine.begin() as db:
        assert db.execute(sa.text("SELECT scope FROM api_keys WHERE id = 'key_old'")).scalar_one() == "admin"
    engine.dispose()
