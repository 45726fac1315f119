"""`darkmatter demo`: the whole product in one run, through the HTTP API only."""
from __future__ import annotations

import base64
import io
import os
import secrets
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from client import processes
from client.errors import DarkmatterError
from client.sdk import Client

# Silent on every training setting: SimCLR's `small` recipe (LARS, lr 0.4 x batch/256, warm-up and
# cosine, temperature 0.2, SimCLR's views). Only the backbone (the CPU-sized CNN instead of ResNet-18)
# and the budget are the demo's own; digits also turn off the flip (a mirrored digit is another digit).
# The budget is a few epochs of a 1000-epoch recipe: proportional schedule points keep the recipe's
# warm-up as 1 % of it (absolute, its 10 epochs would outlast the run). Fashion-MNIST spends the same
# 256k images as batch 96 x 2667 steps (2.7x the updates of batch 256; the LR follows the recipe's linear
# rule) on crops of 20-100 % (8 % of a 28-px image is an 8-px patch): smaller batches and larger crops each
# lifted kNN at a third of this budget, together most (0.8419 -> 0.8494); at the full budget batch 256 /
# 128 / 96 gave kNN 0.8598 / 0.8687 / 0.8717 and linear 0.8850 / 0.8894 / 0.8910.
SPECS = {
    "fashion-mnist": {"method": "simclr", "backbone": "small_cnn", "dataset": "fashion-mnist", "steps": 2667,
                      "batch_size": 96, "augment": {"crops": [{"count": 2, "scale": [0.2, 1.0]}]},
                      "log_every": 20, "schedule_points": "proportional"},
    "digits": {"method": "simclr", "backbone": "small_cnn", "dataset": "digits", "steps": 300, "log_every": 20,
               "augment": {"flip_p": 0.0}, "schedule_points": "proportional"},
}


def png_base64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def run_demo(dataset: str, port: int, home: Path, console: Console) -> int:
    started = time.monotonic()
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    token = secrets.token_urlsafe(32)  # the API's launch token (it runs without --auth)
    env = {**os.environ, "DARKMATTER_HOME": str(home.resolve()), "DARKMATTER_LAUNCH_TOKEN": token}
    for key in ("DARKMATTER_DATABASE_URL", "DARKMATTER_BROKER_URL", "DARKMATTER_RESULT_BACKEND", "DARKMATTER_STORAGE_URL"):
        env.pop(key, None)  # the demo always runs on the embedded default
    api_log, worker_log = open(home / "api.log", "wb"), open(home / "worker.log", "wb")
    procs = [processes.start_api("127.0.0.1", port, env=env, log=api_log),
             processes.start_worker(env=env, log=worker_log)]
    client = Client(f"http://127.0.0.1:{port}", api_key=token)
    try:
        client.wait_ready(120)
        console.print(f"[bold]1.[/bold] API and worker up (SQLite + SQLite broker + local files in {home})")
        name = dataset
        if dataset == "auto":
            name = "fashion-mnist" if Path("/usr/share/datasets/fashion-mnist").exists() else "digits"
        ds = client.register_builtin(name)
        console.print(f"[bold]2.[/bold] registered {ds['name']} as {ds['id']}: {ds['n_items']} train / "
                      f"{ds['n_test']} test images, {ds['n_classes']} classes, hash {ds['content_hash'][:12]}")
        spec = {**SPECS[name], "dataset": ds["id"]}
        job = client.submit(spec)
        recipe = job["recipe"]["train"]
        console.print(f"[bold]3.[/bold] submitted {spec['method']} job {job['id']}: its '{job['recipe']['scale']}' "
                      f"recipe ({recipe['optimizer']}, lr {recipe['lr']:g}, batch {recipe['batch_size']}, "
                      f"{recipe['steps']} steps, warm-up {recipe['warmup_steps']}) on {job['recipe']['backbone']}")
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("   training", total=spec["steps"], info="")

            def show(j):
                m = j["metrics"]
                info = f"loss {m['loss']:.3f}  {m['img_per_s']:.0f} img/s" if "loss" in m else j["state"]
                bar.update(task, completed=j["step"], info=info)

            job = client.wait(job["id"], timeout=1200, on_update=show)
        if job["state"] != "succeeded":
            console.print(f"[red]job ended {job['state']}: {job['error']}[/red]")
            return 1
        checkpoint_id = job["result"]["checkpoint"]
        path, sha = client.download(checkpoint_id, home / "backbone.safetensors")
        from core.checkpoint import load_backbone

        model, manifest = load_backbone(path)
        console.print(f"[bold]4.[/bold] downloaded {checkpoint_id} ({path.stat().st_size} bytes, sha256 {sha[:16]}… "
                      f"matches ETag), rebuilt {manifest['backbone']['name']} with core.checkpoint.load_backbone")
        from core.data import load_source

        _, test = load_source(f"builtin://{name}")
        samples = [png_base64(img[0].numpy()) for img in test.images[:4]]
        response = client.embed(checkpoint_id, samples)
        dims = response["dimensions"]
        console.print(f"[bold]5.[/bold] /v1/embeddings: {len(response['data'])} test images -> {dims}-d vectors, "
                      f"first values {np.round(response['data'][0]['embedding'][:4], 3).tolist()}")
        baseline = client.wait(client.submit({"kind": "evaluate", "checkpoint": "raw-pixels", "dataset": ds["id"],
                                              "protocols": [{"protocol": "knn"}, {"protocol": "linear"}]})["id"])
        if baseline["state"] != "succeeded":
            console.print(f"[red]raw-pixel evaluation ended {baseline['state']}: {baseline['error']}[/red]")
            return 1
        console.print(f"[bold]6.[/bold] scores table ({ds['name']} test split; pretraining cost "
                      f"{job['compute_seconds']:.0f} CPU-s):")
        for protocol, metric, label in (("knn", "top1@k20", "weighted kNN, k=20"), ("linear", "top1", "linear probe")):
            rows = client.scores(dataset=ds["id"], protocol=protocol, metric=metric)["data"]
            ours = next(r for r in rows if r["checkpoint_id"] == checkpoint_id)
            raw = next(r for r in rows if r["baseline"] == "raw-pixels")
            console.print(f"   {label:18}  SimCLR {manifest['backbone']['name']} frozen features: {ours['value']:.4f}"
                          f"   raw pixels: {raw['value']:.4f}")
    except (DarkmatterError, TimeoutError) as exc:
        console.print(f"[red]demo failed: {exc}[/red] (logs in {home})")
        return 1
    finally:
        processes.stop(procs)
        api_log.close()
        worker_log.close()
    console.print(f"[bold]7.[/bold] processes stopped cleanly; demo wall time {time.monotonic() - started:.0f} s")
    return 0
