"""A SEER-sized spec is sized from the RegNet design before anything is built: over the limit it
answers 422 naming the estimate; under it, the job is queued with the seer recipe resolved."""
from __future__ import annotations

SEER_SPEC = {"method": "swav", "scale": "seer", "dataset": "digits", "batch_size": 64, "steps": 1,
             "evaluations": []}


def test_seer_backbone_over_the_limit_is_refused_from_its_estimate(service, monkeypatch):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from jobs import checks

    built = []
    real_build = checks.try_build
    monkeypatch.setattr(checks, "try_build", lambda method, recipe, channels: built.append(recipe["backbone"])
                        or real_build(method, recipe, channels))
    checks._built_size.cache_clear()
    with TestClient(create_app(service.model_copy(update={"max_model_parameters": 1_000_000_000}))) as api:
        response = api.post("/v1/jobs", json=SEER_SPEC)
        assert response.status_code == 422, response.text
        assert "regnet_y_256gf" in response.json()["detail"]
        assert "about 1,272,742,068 parameters; at most 1,000,000,000" in response.json()["detail"]
        assert built == []  # refused from the design's arithmetic: nothing was built, not even on meta

        smaller = api.post("/v1/jobs", json={**SEER_SPEC, "backbone": "regnet_y_8gf"})
        assert smaller.status_code == 201, smaller.text
        assert built == ["regnet_y_8gf"]  # under the limit: built on meta to count the heads too
        recipe = smaller.json()["recipe"]
        assert recipe["backbone"] == "regnet_y_8gf" and recipe["backbone_options"] == {}
        assert recipe["train"]["lr"] == 0.3 * 64 / 256 and recipe["method_options"]["num_prototypes"] == 16_000

        bad = api.post("/v1/jobs", json={**SEER_SPEC, "backbone": "regnet_y", "backbone_options": {"w_0": 12}})
        assert bad.status_code == 422 and "Invalid RegNet settings" in bad.json()["detail"], bad.text
