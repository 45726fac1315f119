"""A pretrain spec that names only a method gets that method's recipe; explicit fields win;
the resolved recipe is stored on the job and shown by GET /v1/methods/{name}."""
from __future__ import annotations

import pytest

from core.methods import method_info
from core.recipes import recipe_fields


@pytest.fixture
def api(sqlite_service):
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(sqlite_service)) as client:
        yield client


def submit(api, **spec) -> dict:
    response = api.post("/v1/jobs", json={"dataset": "digits", **spec})
    assert response.status_code == 201, response.text
    return api.get(f"/v1/jobs/{response.json()['id']}").json()


@pytest.mark.parametrize("name", ["simclr", "dino", "barlow_twins", "mae", "byol"])
def test_a_silent_spec_gets_the_small_recipe(api, name):
    job = submit(api, method=name)
    small = method_info(name).recipes["small"]  # digits are 8 x 8 px: the small scale
    recipe, train = job["recipe"], job["recipe"]["train"]
    n_items = recipe["n_items"]
    assert recipe["scale"] == "small" and recipe["backbone"] == small.backbone
    assert recipe["backbone_options"] == small.backbone_options
    assert train["optimizer"] == small.optimizer and train["weight_decay"] == small.weight_decay
    assert train["final_weight_decay"] == small.final_weight_decay and train["grad_clip"] == small.grad_clip
    batch = min(small.batch_size, n_items)
    assert train["batch_size"] == small.batch_size == batch
    assert train["lr"] == pytest.approx(small.base_lr * small.batch_size / 256 if small.lr_scaling == "linear"
                                        else small.base_lr)
    assert job["total_steps"] == train["steps"] == small.epochs * (n_items // small.batch_size)
    assert train["warmup_steps"] == pytest.approx(small.warmup_epochs * (n_items // small.batch_size), abs=1)
    for key, value in small.method_options.items():
        assert recipe["method_options"][key] == (list(value) if isinstance(value, tuple) else value), key
    assert recipe["views"]["jitter_p"] == small.views.jitter_p
    assert [c["scale"] for c in recipe["views"]["crops"]] == [list(c.scale) for c in small.views.crops]


def test_explicit_fields_win_over_the_recipe(api):
    job = submit(api, method="simclr", steps=40, optimizer="adamw", lr=0.01, weight_decay=0.3, batch_size=32,
                 warmup_steps=5, grad_clip=1.5, augment={"jitter_p": 0.0}, method_options={"temperature": 0.5},
                 optimizer_options={"betas": [0.9, 0.95]}, backbone="small_cnn", backbone_options={"width": 8})
    recipe, train = job["recipe"], job["recipe"]["train"]
    assert (train["optimizer"], train["lr"], train["weight_decay"], train["batch_size"]) == ("adamw", 0.01, 0.3, 32)
    assert (train["warmup_steps"], train["grad_clip"], train["betas"], train["steps"]) == (5, 1.5, [0.9, 0.95], 40)
    assert recipe["views"]["jitter_p"] == 0.0 and recipe["method_options"]["temperature"] == 0.5
    assert recipe["backbone"] == "small_cnn" and recipe["backbone_options"] == {"width": 8}  # recipe's dropped
    small = method_info("simclr").recipes["small"]
    assert recipe["method_options"]["proj_dim"] == small.method_options["proj_dim"]  # the rest stays


def test_base_lr_is_scaled_by_the_batch_and_scale_can_be_forced(api):
    job = submit(api, method="simclr", steps=4, base_lr=0.2, batch_size=128, scale="large")
    large = method_info("simclr").recipes["large"]
    assert job["recipe"]["scale"] == "large" and job["recipe"]["backbone"] == large.backbone
    assert job["recipe"]["train"]["lr"] == pytest.approx(0.2 * 128 / 256)


@pytest.mark.parametrize("change, message", [
    ({"learning_rate": 0.1}, "extra"),
    ({"optimizer": "adam"}, "adamw"),
    ({"optimizer_options": {"nesterov": True}}, "unknown optimizer_options"),
    ({"grad_clip_mode": "sometimes"}, "per_parameter"),
    ({"scale": "huge"}, "small"),
    ({"batch_size": 4096}, "larger than the dataset"),
    ({"optimizer": "adamw"}, "give lr or base_lr"),  # simclr's small recipe is LARS: its LR is no AdamW LR
    ({"schedule_points": "fraction"}, "proportional"),
    ({"lr_groups": {"predictor": {"lr_mult": 2}}}, "lr_scale and fixed_lr"),
])
def test_bad_recipe_fields_answer_422(api, change, message):
    response = api.post("/v1/jobs", json={"method": "simclr", "dataset": "digits", **change})
    assert response.status_code == 422, response.text
    assert message in str(response.json()["detail"])


def test_method_endpoint_shows_each_recipe_with_sources(api):
    body = api.get("/v1/methods/dino").json()
    assert set(body["recipes"]) == {"small", "large"}
    large = body["recipes"]["large"]
    assert set(recipe_fields()) <= set(large)
    assert large == method_info("dino").recipes["large"].describe()
    assert large["sources"], "every recipe cites where its values come from"
    missing = api.get("/v1/methods/nope")
    assert missing.status_code == 404 and "unknown method" in missing.json()["detail"]


def test_cli_shows_a_methods_recipes():
    from typer.testing import CliRunner

    from client.cli import app

    result = CliRunner().invoke(app, ["methods", "simclr"])
    assert result.exit_code == 0, result.output
    assert "recipe 'small'" in result.output and "lars" in result.output
    result = CliRunner().invoke(app, ["methods", "nope"])
    assert result.exit_code == 2 and "unknown method" in result.output


def test_fast_path_fields_reach_the_loops_config(api):
    """What the worker hands TrainConfig: precision and compile default to auto; cuda_graphs as asked."""
    train = submit(api, method="simclr", steps=5)["recipe"]["train"]
    assert (train["precision"], train["compile"], train["cuda_graphs"]) == ("auto", "auto", False)
    train = submit(api, method="simclr", steps=5, cuda_graphs=True, compile="false", precision="fp32")["recipe"]["train"]
    assert (train["precision"], train["compile"], train["cuda_graphs"]) == ("fp32", "false", True)
    from core.train import TrainConfig

    assert TrainConfig(**train).cuda_graphs is True  # the worker's conversion (workers/pretrain.py) keeps it


def test_param_dtype_reaches_the_loops_config(api):
    train = submit(api, method="mae", steps=5)["recipe"]["train"]
    assert train["param_dtype"] == "fp32"
    train = submit(api, method="mae", steps=5, precision="bf16", param_dtype="bf16")["recipe"]["train"]
    assert train["param_dtype"] == "bf16"
    from core.train import TrainConfig

    assert TrainConfig(**train).param_dtype == "bf16"


@pytest.mark.parametrize("change, message", [
    ({"method": "byol"}, "not available for byol"),
    ({"method": "dino"}, "not available for dino"),
    ({"precision": "fp32"}, "needs precision bf16"),
    ({"precision": "fp16"}, "needs precision bf16"),
    ({"devices": 2}, "one process"),
    ({"compile": "whole"}, "compile 'whole'"),
])
def test_param_dtype_bf16_where_it_cannot_run_answers_422(api, change, message):
    response = api.post("/v1/jobs", json={"method": "mae", "dataset": "digits", "param_dtype": "bf16", **change})
    assert response.status_code == 422, response.text
    assert message in str(response.json()["detail"])


def test_schedule_points_are_absolute_unless_the_spec_asks_for_proportional(api):
    # simclr small: 10 warm-up epochs of 1000; digits at batch 32 have 44 steps per epoch
    absolute = submit(api, method="simclr", steps=40, batch_size=32)["recipe"]
    assert absolute["schedule_points"] == "absolute" and absolute["train"]["warmup_steps"] == 40  # capped at the run
    proportional = submit(api, method="simclr", steps=40, batch_size=32, schedule_points="proportional")["recipe"]
    assert proportional["schedule_points"] == "proportional" and proportional["train"]["warmup_steps"] == 1
