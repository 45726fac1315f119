"""`python -m workers.ray_run JOB_ID WORKER_ID`: the driver of a multi-node job's Ray Train run.

The Celery worker that claimed the job starts this process and supervises it as it does any
training child (lease, heartbeat, watchdog; killed on lease loss). It connects to the Ray cluster
that DARKMATTER_RAY_ADDRESS names and fits a TorchTrainer of nodes x devices workers: Ray places
them as one placement group, sets up their process group, watches their health, and restarts
the whole group after a lost worker or node (FailureConfig). Each worker runs workers.child's
rank body, so the loop, the fenced writes and the checkpoints are those of a torchrun job, and a
restarted group resumes from the job's last registered checkpoint (ours, not Ray's: the job's
checkpoints are registered under its lease, and Ray's own need storage shared by every node).
The training workers are actors owned by this driver: when it dies, Ray stops them."""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

import ray
import ray.train
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from jobs import fleet, lifecycle
from jobs.db import retrying, session_scope
from jobs.logs import configure, current_job
from jobs.settings import Settings, get_settings
from jobs.tables import Job
from workers import child
from workers.context import JobContext
from workers.launch import LOST_GROUP, TRANSIENT, UNRECORDED, die_with_parent

log = logging.getLogger("workers.ray_run")
SETTINGS_ENV = ("home", "database_url", "broker_url", "broker_key_prefix", "result_backend", "storage_url", "device",
                "cancel_poll_seconds", "checkpoint_seconds", "process_group_timeout", "log_format")


@ray.remote(num_cpus=0)
class Outcomes:
    """The ranks' reports to the driver: which have started, and each one's exit code (with a
    final state it could not write). An actor, so that it reaches the driver from any node."""

    def __init__(self):
        self.started: set[int] = set()
        self.codes: dict[int, tuple[int, dict | None]] = {}

    def start(self, rank: int) -> None:
        self.started.add(rank)

    def finish(self, rank: int, code: int, recorded: dict | None) -> None:
        self.codes[rank] = (code, recorded)

    def read(self) -> tuple[int, dict]:
        return len(self.started), dict(self.codes)


class RankExit(Exception):
    """A rank ended with an exit code that Ray should treat as a failure of the worker group."""

    def __init__(self, rank: int, code: int):
        super().__init__(rank, code)
        self.rank, self.code = rank, code

    def __str__(self):
        return f"rank {self.rank} exited with code {self.code}"


def train_rank(config: dict) -> None:
    """One Ray Train worker: run workers.child's rank body in the process group Ray set up."""
    settings = get_settings()
    configure("child", logging.INFO, settings.log_format)
    current_job.set(config["job_id"])
    rank = ray.train.get_context().get_world_rank()
    outcomes = config["outcomes"]
    ray.get(outcomes.start.remote(rank))
    code, recorded = child.run_rank(settings, config["job_id"], config["worker_id"], rank)
    ray.get(outcomes.finish.remote(rank, code, recorded))
    if code in (TRANSIENT, LOST_GROUP) and _active(settings, config["job_id"], config["worker_id"]):
        raise RankExit(rank, code)  # Ray restarts the group, which resumes from the last checkpoint


def _active(settings: Settings, job_id: str, worker_id: str) -> bool:
    def read():
        with session_scope(settings.database_url) as session:
            job = session.get(Job, job_id)
            return job is not None and job.worker_id == worker_id and job.state in lifecycle.ACTIVE

    return retrying(read, attempts=5)


def worker_resources(settings: Settings, spec: dict) -> tuple[bool, dict[str, float]]:
    """(use_gpu, resources of one training worker): a GPU each where the job asks for CUDA or the
    cluster has GPUs, else one CPU each."""
    device = spec.get("device", "auto")
    device = settings.device if device == "auto" else device
    use_gpu = device.startswith("cuda") or (device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
    return use_gpu, ({"CPU": 1, "GPU": 1} if use_gpu else {"CPU": 1})


def trainer(settings: Settings, job: Job, worker_id: str, outcomes) -> TorchTrainer:
    use_gpu, per_worker = worker_resources(settings, job.spec)
    # one worker per machine when each machine gets one device: the gang spans the nodes
    strategy = "STRICT_SPREAD" if job.devices == 1 else "PACK"
    return TorchTrainer(
        train_rank,
        train_loop_config={"job_id": job.id, "worker_id": worker_id, "outcomes": outcomes},
        scaling_config=ScalingConfig(num_workers=job.nodes * job.devices, use_gpu=use_gpu,
                                     resources_per_worker=per_worker, placement_strategy=strategy),
        torch_config=TorchConfig(backend="cpu:gloo,cuda:nccl" if use_gpu else "gloo",
                                 timeout_s=int(settings.process_group_timeout)),
        run_config=RunConfig(name=f"{job.id}-attempt{job.attempt}", storage_path=str(Path(settings.home) / "ray"),
                             failure_config=FailureConfig(max_failures=settings.ray_max_failures)))


def needs(job: Job, per_worker: dict[str, float]) -> str:
    each = ", ".join(f"{v:g} {k}" for k, v in per_worker.items())
    return f"{job.nodes * job.devices} workers ({job.nodes} nodes x {job.devices} devices) of {each} each"


def cluster_has() -> str:
    alive = [n for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    return f"{len(alive)} nodes, " + ", ".join(f"{total.get(k, 0):g} {k}" for k in ("CPU", "GPU"))


def main(job_id: str, worker_id: str) -> int:
    die_with_parent()  # a killed worker takes its driver, and so the Ray run, with it
    settings = get_settings()
    configure("child", logging.INFO, settings.log_format)
    current_job.set(job_id)
    if not settings.ray_address:
        ctx = JobContext(settings, job_id, worker_id, attempt=_attempt(settings, job_id))
        return _fail(ctx, "the job has nodes > 1, but no Ray cluster is configured (DARKMATTER_RAY_ADDRESS)")
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        session.expunge(job)
    if job.worker_id != worker_id or job.state not in lifecycle.ACTIVE:
        return child.LEFT
    ctx = JobContext(settings, job_id, worker_id, attempt=job.attempt)
    env = {f"DARKMATTER_{f.upper()}": str(getattr(settings, f)) for f in SETTINGS_ENV}
    for name in ("PYTHONPATH", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES"):
        if name in os.environ:
            env[name] = os.environ[name]
    ray.init(address=settings.ray_address, runtime_env={"env_vars": env}, logging_level=logging.WARNING,
             configure_logging=False)
    # on the driver's own node, as Ray Train places its controller: placed anywhere, the actor could
    # die with a training node and take the driver with it, where Ray would have restarted the group
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    outcomes = Outcomes.options(scheduling_strategy=here).remote()
    fit = trainer(settings, job, worker_id, outcomes)
    _, per_worker = worker_resources(settings, job.spec)
    error: list[BaseException] = []

    def run():
        try:
            fit.fit()
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            error.append(exc)

    runner = threading.Thread(target=run, name="ray-fit", daemon=True)
    runner.start()
    waiting_since, said_waiting = time.monotonic(), False
    while runner.is_alive():
        runner.join(timeout=settings.cancel_poll_seconds)
        ctx.beat()  # Ray watches the training workers' health; this process is alive while it waits
        started, _ = ray.get(outcomes.read.remote())
        if started:
            continue
        waited = time.monotonic() - waiting_since
        state = ctx.read(lambda s: s.get(Job, job_id).state)
        if state == lifecycle.CANCELLING:  # cancelled before any rank started: nothing to checkpoint
            ctx.write(lambda s: lifecycle.finish(s, job_id, worker_id, lifecycle.CANCELLED, result={"step": 0}))
            return 0
        if not said_waiting and waited > 5:
            said_waiting = True
            ctx.event("log", f"{fleet.RAY_WAITING} to place {needs(job, per_worker)}; it has {cluster_has()}")
        if waited > settings.ray_placement_timeout:
            return _fail(ctx, f"the Ray cluster could not place {needs(job, per_worker)} within "
                              f"{settings.ray_placement_timeout:.0f}s; it has {cluster_has()}")
    _, codes = ray.get(outcomes.read.remote())
    return _settle(settings, job_id, codes, error[0] if error else None)


def _settle(settings: Settings, job_id: str, codes: dict, error: BaseException | None) -> int:
    """The driver's exit code for the worker, from the ranks' codes and how the fit ended."""
    recorded = next((r for _, r in codes.values() if r), None)
    if recorded is not None:
        folder = os.environ.get("DARKMATTER_OUTCOME_DIR")
        if folder:
            Path(folder, "rank-0.json").write_text(json.dumps({"rank": 0, "code": UNRECORDED, "recorded": recorded}))
        return UNRECORDED
    if error is not None:
        log.warning("job %s: the Ray run failed: %s", job_id, error)
        found = {code for code, _ in codes.values()}
        return TRANSIENT if TRANSIENT in found else LOST_GROUP
    return max((code for code, _ in codes.values()), default=0) if codes else LOST_GROUP


def _attempt(settings: Settings, job_id: str) -> int:
    with session_scope(settings.database_url) as session:
        return session.get(Job, job_id).attempt


def _fail(ctx: JobContext, reason: str) -> int:
    ctx.event("log", reason)
    ctx.write(lambda s: lifecycle.finish(s, ctx.job_id, ctx.worker_id, lifecycle.FAILED, error=reason))
    return 0


if __name__ == "__main__":
    from workers import ray_run  # the module by its name: Ray pickles train_rank by reference

    sys.exit(ray_run.main(sys.argv[1], sys.argv[2]))
