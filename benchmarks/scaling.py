"""Scaling efficiency of the training loop under torch.distributed: global img/s on N processes
over N x the img/s of one process, same per-process batch (weak scaling, as a job with `devices: N`).

    .venv/bin/python benchmarks/scaling.py [--device cpu|cuda] [--procs 1,2] [--backbone small_cnn]
    .venv/bin/python benchmarks/scaling.py --ray local      # the same, placed by Ray Train
    .venv/bin/python benchmarks/scaling.py --ray HOST:PORT  # on an existing Ray cluster

On the CPU every process gets one thread (gloo); on a GPU machine one process per GPU (NCCL), up
to the GPUs it has. With --ray the processes are Ray Train workers (TorchTrainer, one placement
group, Ray's process-group setup) as for a job with nodes > 1; `local` starts a loopback cluster of
one node per process (one CPU each) and stops it after. Prints one row per world size and the
efficiency against the target."""
from __future__ import annotations

import argparse
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from core.data.builtin import load
from core.data.transforms import resize_images
from core.methods import build
from core.train import Callbacks, TrainConfig, train

TARGET_GPU = 0.90


class Clock(Callbacks):
    """Times the steps after `warmup` (on rank 0, whose should_stop every rank waits for)."""

    def __init__(self, warmup: int):
        self.warmup, self.started, self.finished = warmup, None, None

    def should_stop(self, step):
        if step == self.warmup:
            self.started = time.perf_counter()
        return None

    def on_checkpoint(self, step, state, final):
        self.finished = time.perf_counter()


def worker(rank: int, world: int, port: int, args, results) -> None:
    if world > 1:
        dist.init_process_group("nccl" if args.device == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                                rank=rank, world_size=world)
    rate = timed_run(rank, world, args, torch.device("cuda", rank) if args.device == "cuda" else torch.device("cpu"))
    if rank == 0:
        results.put(rate)
    if world > 1:
        dist.destroy_process_group()


def timed_run(rank: int, world: int, args, device: torch.device) -> float:
    """Global img/s of the timed steps (rank 0's clock), in a process group already joined."""
    torch.set_num_threads(1 if args.device == "cpu" else torch.get_num_threads())
    if args.device == "cuda":
        torch.cuda.set_device(device)
    train_set, _ = load(args.dataset)
    images = resize_images(train_set.images, args.image_size)
    torch.manual_seed(0)
    options = {"width": 32} if args.backbone == "small_cnn" else {}
    method = build(args.method, backbone=args.backbone, in_channels=images.shape[1], image_size=args.image_size,
                   mean=[0.5] * images.shape[1], std=[0.25] * images.shape[1], backbone_options=options,
                   proj_hidden_dim=512, proj_dim=128)
    config = TrainConfig(steps=args.warmup + args.steps, batch_size=args.batch * world, optimizer="lars", lr=0.3,
                         log_every=10**9, precision="bf16" if args.device == "cuda" else "fp32")
    clock = Clock(args.warmup)
    train(method, images, config, device=device, callbacks=clock)
    if args.device == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch * world / (clock.finished - clock.started) if rank == 0 else 0.0


def ray_worker(config: dict) -> float:
    """One Ray Train worker: Ray has set up the process group; rank 0's rate is the run's value."""
    import ray.train
    from ray.train.torch import get_device

    context = ray.train.get_context()
    return timed_run(context.get_world_rank(), context.get_world_size(), config["args"], get_device())


def ray_throughput(world: int, args) -> float:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    cuda = args.device == "cuda"
    trainer = TorchTrainer(ray_worker, train_loop_config={"args": args},
                           scaling_config=ScalingConfig(num_workers=world, use_gpu=cuda,
                                                        resources_per_worker={"CPU": 1, "GPU": 1} if cuda else {"CPU": 1}),
                           torch_config=TorchConfig(backend="nccl" if cuda else "gloo"),
                           run_config=RunConfig(name=f"scaling-{world}", storage_path=args.ray_results))
    return trainer.fit().return_value


def local_ray_cluster(nodes: int):
    """A loopback Ray cluster: a head without CPUs and `nodes` nodes of one CPU each, in its own temp dir."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.cluster_utils import Cluster

    node = dict(num_cpus=1, object_store_memory=100 * 2**20)
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={**node, "num_cpus": 0, "include_dashboard": False})
    for _ in range(nodes):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    return cluster


def throughput(world: int, args) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(worker, args=(world, port, args, results), nprocs=world, start_method="spawn")
    return results.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--procs", default=None, help="world sizes, e.g. 1,2,4,8 (default: 1,2 on CPU, 1..GPUs)")
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--backbone", default=None, help="default: small_cnn on CPU, resnet18 on GPU")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=None, help="per-process batch (default 64 CPU, 256 GPU)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--ray", default=None, help="place the processes with Ray Train: `local` (a loopback "
                                                    "cluster, CPU) or a cluster's address")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    args.backbone = args.backbone or ("resnet18" if cuda else "small_cnn")
    args.batch = args.batch or (256 if cuda else 64)
    gpus = torch.cuda.device_count() if cuda else 0
    default = [n for n in (1, 2, 4, 8) if n <= gpus] if cuda else [1, 2]
    procs = [int(p) for p in args.procs.split(",")] if args.procs else default
    where = f"{gpus} x {torch.cuda.get_device_name(0)}" if cuda else f"CPU, {os.cpu_count()} cores, 1 thread per process"
    cluster, scratch = None, None
    if args.ray:
        import tempfile

        import ray

        scratch = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live under it
        args.ray_results = os.path.join(scratch, "results")
        os.environ.setdefault("RAY_TMPDIR", scratch)

        cluster = local_ray_cluster(max(procs)) if args.ray == "local" else None
        ray.init(address=cluster.address if cluster else args.ray, logging_level="WARNING")
        where += f"; placed by Ray Train on {'a loopback cluster of ' + str(max(procs)) + ' nodes' if cluster else args.ray}"
    print(f"scaling: {args.method} {args.backbone} {args.image_size}px, {args.batch} images per process per step, "
          f"{args.steps} timed steps; {where}")
    print(f"{'processes':>9} {'global img/s':>13} {'per process':>12} {'efficiency':>11}")
    base = None
    try:
        for world in procs:
            rate = ray_throughput(world, args) if args.ray else throughput(world, args)
            base = base or rate / world
            print(f"{world:>9} {rate:>13.1f} {rate / world:>12.1f} {rate / (world * base):>10.1%}", flush=True)
    finally:
        if args.ray:
            import ray
            import shutil

            ray.shutdown()
            if cluster is not None:
                cluster.shutdown()
            shutil.rmtree(scratch, ignore_errors=True)
    if cuda:
        print(f"target on GPUs: >= {TARGET_GPU:.0%} efficiency")
    else:
        print("CPU figure for reference (gloo on shared cores); the target applies to GPUs")


if __name__ == "__main__":
    main()
