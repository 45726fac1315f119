"""GET /v1/scores' leaderboard: each metric ranked by its direction (perplexity: lower is better;
counts not ranked, no per-compute-hour), one row per configuration with the mean and std over
seeds, `runs` counting training runs (not score rows), a re-evaluation replacing its earlier value."""
from __future__ import annotations

import statistics

import pytest

from jobs.db import session_scope
from jobs.tables import DEFAULT_PROJECT, Checkpoint, Dataset, Job, Score


def add_run(session, job_id: str, method: str, seed: int, values: dict[str, float], recipe_lr: float = 0.1,
            protocol: str = "mlm", options: dict | None = None, compute_seconds: float = 3600.0) -> None:
    """A finished pretrain job (its recipe, seed) with a checkpoint and its score rows."""
    recipe = {"scale": "base", "train": {"lr": recipe_lr, "seed": seed}}
    session.add(Job(id=job_id, project_id=DEFAULT_PROJECT, kind="pretrain", state="succeeded",
                    spec={"seed": seed}, recipe=recipe, queue="default", method=method, step=1, total_steps=1,
                    result={}))
    session.flush()  # the job before its checkpoint (no ORM relationship orders them)
    session.add(Checkpoint(id=f"ckpt_{job_id}", project_id=DEFAULT_PROJECT, job_id=job_id, step=1, final=True,
                           method=method, backbone="text_tiny", sha256="0" * 64, bytes=1, parts={}, manifest={}))
    session.flush()
    for metric, value in values.items():
        session.add(Score(project_id=DEFAULT_PROJECT, checkpoint_id=f"ckpt_{job_id}", method=method,
                          backbone="text_tiny", dataset_id="ds_corpus", protocol=protocol, metric=metric,
                          value=value, options={**(options or {}), "seed": 0}, compute_seconds=compute_seconds))


@pytest.fixture
def board(service, api):
    with session_scope(service.database_url) as session:
        session.add(Dataset(id="ds_corpus", project_id=DEFAULT_PROJECT, name="corpus", uri="x", format="jsonl",
                            state="ready"))
        session.flush()
        add_run(session, "job_m1", "mlm", 0, {"perplexity": 2573.0, "accuracy": 0.20, "masked_tokens": 900.0})
        add_run(session, "job_m2", "mlm", 1, {"perplexity": 2401.0, "accuracy": 0.22, "masked_tokens": 900.0})
        add_run(session, "job_s1", "mlm_simcse", 0, {"perplexity": 1354.0, "accuracy": 0.31, "masked_tokens": 950.0})
        # the same training run of simcse evaluated twice with the same seed: the later value counts
        session.add(Score(project_id=DEFAULT_PROJECT, checkpoint_id="ckpt_job_s1", method="mlm_simcse",
                          backbone="text_tiny", dataset_id="ds_corpus", protocol="mlm", metric="perplexity",
                          value=1300.0, options={"seed": 0}, compute_seconds=3600.0))
        # another recipe (a different LR) is another configuration, even with the same method
        add_run(session, "job_m3", "mlm", 0, {"perplexity": 900.0}, recipe_lr=0.5)
    return {(r["method"], r["metric"], r["mean"]): r
            for r in api.get("/v1/scores", params={"dataset": "corpus"}).json()["leaderboard"]}, api


def rows(board, metric):
    return sorted((r for (_, m, _), r in board.items() if m == metric), key=lambda r: (r["rank"] or 0, r["method"]))


def test_lower_is_better_metrics_rank_the_lowest_first(board):
    board, _ = board
    perplexity = rows(board, "perplexity")
    assert [(r["method"], r["mean"]) for r in perplexity] == [("mlm", 900.0), ("mlm_simcse", 1300.0),
                                                              ("mlm", statistics.fmean([2573.0, 2401.0]))]
    assert [r["rank"] for r in perplexity] == [1, 2, 3]
    assert {r["direction"] for r in perplexity} == {"lower"} and {r["kind"] for r in perplexity} == {"loss"}
    assert all(r["score_per_compute_hour"] is None for r in perplexity)  # per compute-hour is for scores only
    accuracy = rows(board, "accuracy")
    assert [r["method"] for r in accuracy] == ["mlm_simcse", "mlm"] and accuracy[0]["direction"] == "higher"
    assert accuracy[0]["score_per_compute_hour"] == pytest.approx(0.31)  # one compute-hour


def test_counts_are_not_ranked(board):
    board, api = board
    counts = rows(board, "masked_tokens")
    assert {r["kind"] for r in counts} == {"count"} and {r["rank"] for r in counts} == {None}
    assert all(r["score_per_compute_hour"] is None for r in counts)
    described = api.get("/v1/scores", params={"dataset": "corpus"}).json()["metrics"]
    assert described["perplexity"] == {"direction": "lower", "kind": "loss"}
    assert described["masked_tokens"] == {"direction": None, "kind": "count"}


def test_rows_are_mean_and_std_over_seeds_with_training_runs_counted(board):
    board, _ = board
    two_seeds = board["mlm", "perplexity", statistics.fmean([2573.0, 2401.0])]
    assert two_seeds["n"] == 2 and two_seeds["runs"] == 2
    assert two_seeds["std"] == pytest.approx(statistics.stdev([2573.0, 2401.0]))
    assert two_seeds["recipe"] == "base" and two_seeds["dataset_name"] == "corpus"
    assert two_seeds["checkpoint"] == "ckpt_job_m2"  # its best run (lowest perplexity), for download
    re_evaluated = board["mlm_simcse", "perplexity", 1300.0]
    assert re_evaluated["runs"] == 1 and re_evaluated["n"] == 1 and re_evaluated["std"] is None


def test_the_cli_shows_mean_std_direction_and_full_ids(board, service, monkeypatch):
    from typer.testing import CliRunner

    from client.cli import app

    _, api = board
    monkeypatch.setattr("client.cli.results.connect", lambda url, key: FakeClient(api))
    result = CliRunner().invoke(app, ["scores", "--dataset", "corpus"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "2487 ± 1.2e+02" in result.output and "perplexity ↓" in result.output
    assert "ckpt_job_m2" in result.output  # never cut, even at 80 columns


class FakeClient:
    """The CLI's client over the in-process app (the live tests drive a real server)."""

    def __init__(self, http):
        self.http = http

    def scores(self, **filters):
        return self.http.get("/v1/scores", params={k: v for k, v in filters.items() if v is not None}).json()
