"""kill -9 of a worker or of its training child at random points: the job still ends succeeded,
each attempt resumes from the last checkpoint, and the weights equal an uninterrupted run's."""
from __future__ import annotations

import os
import random
from pathlib import Path

from tests.conftest import wait_for
from tests.faults.conftest import (FAULT_SPEC, assert_same_weights, checkpoints_of, events, final_state, last_metric_id,
                                   loss_steps_since, training_child, uninterrupted_weights, wait_progress)


def test_job_survives_kill_9_of_workers_and_children(service, api, worker):
    rng = random.Random(7)
    every = FAULT_SPEC["checkpoint_every"]
    victims = ["worker", "child", "worker"]
    rng.shuffle(victims)
    job_id = api.post("/v1/jobs", json=FAULT_SPEC).json()["id"]
    current = worker(name="a")
    after, attempts = 0, []  # metric rows before the attempt, and each attempt's logged steps
    for n, victim in enumerate(victims):
        steps = wait_progress(service, job_id, after, rng.randint(2, 2 * every))
        if victim == "worker":
            current.kill()  # the worker and its child, with no chance to clean up
            current = worker(name=f"b{n}")
        else:
            os.kill(training_child(current), 9)  # the worker sees its child die and re-enqueues the job
        after = last_metric_id(service, job_id)
        attempts.append(steps)
    done = wait_for(api, job_id, timeout=180)
    assert done["state"] == "succeeded", done
    assert done["attempt"] == len(victims) + 1 and done["step"] == FAULT_SPEC["steps"]

    attempts.append(loss_steps_since(service, job_id, after))
    resumed = [e.message for e in events(service, job_id) if "resuming at step" in e.message]
    assert len(resumed) == len(victims), resumed
    for previous, following in zip(attempts, attempts[1:]):
        # the next attempt starts right after a checkpoint at most one interval behind the last logged step
        start = following[0] - 1
        assert start % every == 0 and max(previous) - start <= every, (max(previous), start)
    assert_same_weights(final_state(service, job_id)["method"], uninterrupted_weights(service, job_id))

    kept = {row.id for row in checkpoints_of(service, job_id)}
    assert len(kept) <= FAULT_SPEC["keep_last"] + 2  # newest N, the best and the final
    folders = {path.name for path in (Path(service.storage_url) / "checkpoints").iterdir()}
    assert kept <= folders and len(folders - kept) <= len(victims)  # at most one orphan per kill, for the GC
