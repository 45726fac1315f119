"""Every registered image method with its own `small` recipe, for one fixed CPU budget each, through the HTTP API.

    .venv/bin/python benchmarks/recipes.py [--budget-s 240] [--methods simclr,mae] [--dataset fashion-mnist|digits]
                                           [--port 8766] [--home .darkmatter/bench-recipes] [--keep]

Starts the service as `darkmatter demo` does (API + one worker on the embedded default: SQLite, the SQLite
broker, local artifacts in a fresh DARKMATTER_HOME; their logs are api.log / worker.log there), registers
Fashion-MNIST (official 60k/10k split; sklearn's digits when /usr/share/datasets/fashion-mnist is missing)
and, for each method, submits pretrain jobs whose specs leave every recipe-owned setting (optimizer, LR,
weight decay, schedules, views, method options, batch size) to the method's `small` recipe, except:

- the backbone (a stated deviation): the small recipes use ResNet-18 or a ViT, too slow for a 2-core CPU, so
  CNN recipes train `small_cnn` and ViT recipes a small `vit_tiny` (options printed in the header);
- the budget: the same CPU budget for every method. A short calibration job of the same spec measures the
  throughput (img/s, from the job's logged metrics) and the recipe's batch size (from the job's resolved
  recipe); the real job then runs steps = budget * img/s / batch. Its compute seconds are what is reported.

Pretrain jobs run with `evaluations: []`; each checkpoint then gets one evaluate job (kNN k=20, linear
probe, few-shot at 1 % of the labels, k-means NMI, health/RankMe). After the training the baselines are
evaluated once: raw pixels, and a random-init of each architecture the checkpoints have, built with the
options their jobs resolved (a ViT recipe's mean-pooled readout is part of the network). Every number is
read back from the scores table over HTTP and printed as a Markdown table, followed by the methods that do
not beat their own random-init on the linear probe. A failed or timed-out job prints its error in the
table; the run goes on."""
from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import socket
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from client import processes
from client.sdk import ApiError, Client

log = logging.getLogger("benchmarks.recipes")

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
CNN = ("small_cnn", {"width": 32})
VIT = ("vit_tiny", {"dim": 96, "depth": 6, "heads": 3, "patch_size": 4})
PROTOCOLS = [
    {"protocol": "knn", "options": {"k": 20}},
    {"protocol": "linear", "options": {}},
    {"protocol": "few-shot", "options": {"fractions": [0.01]}},
    {"protocol": "clustering", "options": {}},
    {"protocol": "health", "options": {}},
]
# Table column -> (protocol, metric) as the evaluate job records them in the scores table.
SCORE_COLUMNS = {"kNN@20": ("knn", "top1@k20"), "linear top-1": ("linear", "top1"),
                 "few-shot 1 %": ("few-shot", "top1@1pct"), "NMI": ("clustering", "nmi"),
                 "RankMe": ("health", "rankme")}
LINEAR = SCORE_COLUMNS["linear top-1"]
THRESHOLD = ("Threshold: every method beats its own random-init on the linear probe. Where a method cannot at "
             "this budget, the table says so. Never tune the evaluation to pass.")
CALIBRATION_TIMEOUT_S = 900
SERVICE_ENV = ("DARKMATTER_DATABASE_URL", "DARKMATTER_BROKER_URL", "DARKMATTER_RESULT_BACKEND",
               "DARKMATTER_STORAGE_URL")


@dataclass
class Row:
    """One line of the table: a trained method or a baseline."""
    name: str
    backbone: str  # the architecture's label: the backbone, and any resolved option the benchmark did not set
    steps: int | None = None
    img_per_s: float | None = None
    compute_s: float | None = None
    checkpoint: str | None = None
    scores: dict = field(default_factory=dict)  # (protocol, metric) -> value
    note: str = ""
    baseline: bool = False
    architecture: tuple[str, dict] | None = None  # (backbone, options) as the pretrain job resolved them


class JobFailed(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------- the service

def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def start_service(home: Path, port: int) -> tuple[list, list]:
    """API + one worker on the embedded default in a fresh `home`; returns (processes, log files)."""
    if not port_free(port):
        raise SystemExit(f"port {port} is in use; pick another with --port")
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = {**os.environ, "DARKMATTER_HOME": str(home.resolve())}
    for key in SERVICE_ENV:
        env.pop(key, None)  # always the embedded default
    # without --auth the API asks for a launch token: the client here sends DARKMATTER_TOKEN
    env["DARKMATTER_LAUNCH_TOKEN"] = os.environ.setdefault("DARKMATTER_TOKEN", secrets.token_urlsafe(16))
    logs = [open(home / "api.log", "wb"), open(home / "worker.log", "wb")]
    procs = [processes.start_api("127.0.0.1", port, env=env, log=logs[0]),
             processes.start_worker(env=env, log=logs[1])]
    log.info("API on :%d and one worker started; logs in %s", port, home)
    return procs, logs


def get_json(client: Client, path: str, **params) -> dict:
    """GET a /v1 path the SDK has no method for (method detail, job metrics)."""
    response = client.http.get(path, params={k: v for k, v in params.items() if v is not None})
    if response.status_code >= 400:
        raise ApiError(response.status_code, response.text)
    return response.json()


def pick_dataset(requested: str) -> str:
    if requested == "fashion-mnist" and not FASHION_MNIST_DIR.exists():
        log.warning("%s is missing (apt-get install dataset-fashion-mnist, or `make fashion-mnist`); "
                    "falling back to sklearn's digits", FASHION_MNIST_DIR)
        return "digits"
    return requested


def register_dataset(client: Client, name: str) -> dict:
    row = client.register_builtin(name)
    if row["state"] != "ready":
        row = client.wait_dataset(row["id"], timeout=600)
    if row["state"] != "ready":
        raise SystemExit(f"dataset {name} is {row['state']}: {row.get('error')}")
    return row


# ------------------------------------------------------------------------------------------------ methods

def image_methods(client: Client, wanted: list[str]) -> dict[str, str]:
    """{method: its small recipe's backbone} for the registered image methods (all, or `wanted`)."""
    registered = {m["name"]: m for m in client.methods()["data"] if m.get("modality", "image") == "image"}
    unknown = [n for n in wanted if n not in registered]
    if unknown:
        raise SystemExit(f"not registered image methods: {', '.join(unknown)}; known: {', '.join(registered)}")
    out = {}
    for name in wanted or sorted(registered):
        recipes = get_json(client, f"/v1/methods/{name}").get("recipes", {})
        if "small" not in recipes:
            log.warning("%s has no small recipe; skipped", name)
            continue
        out[name] = recipes["small"]["backbone"]
    return out


def cpu_backbone(recipe_backbone: str, cnn: tuple, vit: tuple) -> tuple[str, dict]:
    """The CPU-sized stand-in for a recipe's backbone: ViT recipes -> vit, everything else -> cnn."""
    return vit if recipe_backbone.startswith("vit") else cnn


def pretrain_spec(method: str, dataset_id: str, backbone: tuple[str, dict], steps: int, log_every: int,
                  method_options: dict | None = None) -> dict:
    """Silent on every recipe-owned field; only the backbone, the budget and any `--method-options`
    (a stated deviation) are set here. The budget is a fraction of the recipe's epochs, so its schedule
    points (warm-up) keep their share of it."""
    name, options = backbone
    return {"kind": "pretrain", "method": method, "dataset": dataset_id, "scale": "small", "backbone": name,
            "backbone_options": options, "steps": steps, "log_every": log_every, "evaluations": [],
            "schedule_points": "proportional", **({"method_options": method_options} if method_options else {})}


# --------------------------------------------------------------------------------------------------- jobs

def run_job(client: Client, spec: dict, timeout_s: float) -> dict:
    """Submit and wait; a job past its wall-clock guard is cancelled. Raises JobFailed with the reason."""
    try:
        job = client.submit(spec)
    except ApiError as exc:
        raise JobFailed(f"rejected: {exc}") from exc
    try:
        job = client.wait(job["id"], timeout=timeout_s, poll=2.0)
    except TimeoutError:
        client.cancel(job["id"])
        client.wait(job["id"], timeout=120, poll=2.0)
        raise JobFailed(f"job {job['id']} ran past its {timeout_s:.0f} s wall-clock guard; cancelled")
    if job["state"] != "succeeded":
        raise JobFailed(f"job {job['id']} {job['state']}: {job.get('error')}")
    return job


def throughput(client: Client, job_id: str) -> float | None:
    """Median of the job's logged img/s windows, leaving out the first one (it holds the warm-up)."""
    values, after = [], 0
    while True:
        page = get_json(client, f"/v1/jobs/{job_id}/metrics", name="img_per_s", after_step=after)["data"]
        values += [m["value"] for m in page]
        if len(page) < 1000:
            break
        after = page[-1]["step"]
    steady = values[1:] or values
    return statistics.median(steady) if steady else None


def calibrate(client: Client, spec: dict) -> tuple[float, int, tuple[str, dict]]:
    """(img/s, recipe batch size, (backbone, options) as resolved) from a short job of the same spec."""
    job = run_job(client, spec, CALIBRATION_TIMEOUT_S)
    recipe = job.get("recipe") or {}
    batch = recipe.get("train", {}).get("batch_size")
    if not batch or "backbone_options" not in recipe:
        raise JobFailed(f"calibration job {job['id']} has no recipe.train.batch_size or recipe.backbone_options "
                        "in GET /v1/jobs/{id}")
    img_per_s = throughput(client, job["id"]) or job["metrics"].get("img_per_s")
    if not img_per_s:
        raise JobFailed(f"calibration job {job['id']} logged no img_per_s")
    return img_per_s, batch, (recipe["backbone"], recipe["backbone_options"])


def architecture_label(architecture: tuple[str, dict], given: dict) -> str:
    """The backbone's name, with the resolved options the benchmark did not set (the recipe's own), e.g.
    "vit_tiny (pool mean)": two checkpoints of one backbone read out differently are different networks."""
    name, options = architecture
    extra = [f"{k} {v}" for k, v in sorted(options.items()) if given.get(k) != v]
    return f"{name} ({', '.join(extra)})" if extra else name


def train_method(client: Client, method: str, dataset_id: str, backbone: tuple[str, dict], args) -> Row:
    """Calibrate, then pretrain for the budget; the row holds the real job's steps, img/s, compute seconds."""
    row = Row(method, backbone[0])
    calibration_steps = args.calibration_steps
    try:
        overrides = args.method_options.get(method)
        spec = pretrain_spec(method, dataset_id, backbone, calibration_steps, max(1, calibration_steps // 3), overrides)
        img_per_s, batch, row.architecture = calibrate(client, spec)
        row.steps = max(1, round(args.budget_s * img_per_s / batch))
        row.backbone = architecture_label(row.architecture, backbone[1])
        log.info("%s: calibrated %.0f img/s at batch %d -> %d steps for %.0f s", method, img_per_s, batch,
                 row.steps, args.budget_s)
        job = run_job(client, pretrain_spec(method, dataset_id, backbone, row.steps, 10, overrides),
                      guard_s(args.budget_s))
    except JobFailed as exc:
        row.note = str(exc)
        log.error("%s: %s", method, exc)
        return row
    row.compute_s = job["compute_seconds"]
    row.img_per_s = throughput(client, job["id"]) or row.steps * batch / max(row.compute_s, 1e-9)
    row.checkpoint = (job.get("result") or {}).get("checkpoint")
    if not row.checkpoint:
        row.note = f"job {job['id']} succeeded without a checkpoint in its result"
    return row


def guard_s(budget_s: float) -> float:
    """Wall-clock guard of a budgeted job: the CPU is shared, so generous, but finite."""
    return 3 * budget_s + 300


def evaluate_spec(dataset_id: str, sources: list[str], backbone: tuple[str, dict] | None) -> dict:
    """A random-init is built with the trained architecture's options, so it is the same network."""
    spec = {"kind": "evaluate", "dataset": dataset_id, "checkpoints": sources, "protocols": PROTOCOLS}
    if backbone:
        spec["backbone"], spec["backbone_options"] = backbone
    return spec


def evaluate(client: Client, dataset_id: str, sources: list[str], backbone: tuple[str, dict] | None,
             timeout_s: float) -> tuple[dict, str]:
    """Run one evaluate job; returns (job, note)."""
    return run_job(client, evaluate_spec(dataset_id, sources, backbone), timeout_s), ""


# ------------------------------------------------------------------------------------------------- scores

def score_map(rows: list[dict]) -> dict:
    return {(r["protocol"], r["metric"]): r["value"] for r in rows}


def checkpoint_scores(client: Client, checkpoint_id: str, eval_job_id: str) -> dict:
    rows = client.checkpoint_scores(checkpoint_id)["data"]
    return score_map([r for r in rows if r["eval_job_id"] == eval_job_id])


def baseline_scores(client: Client, dataset_id: str, eval_job_id: str, baseline: str, backbone: str | None) -> dict:
    rows = client.scores(dataset=dataset_id, method=baseline, backbone=backbone, limit=1000)["data"]
    return score_map([r for r in rows if r["eval_job_id"] == eval_job_id and r["baseline"] == baseline])


def evaluate_baselines(client: Client, dataset_id: str, architectures: dict[str, tuple[str, dict]],
                       timeout_s: float) -> list[Row]:
    """raw pixels once, then a random-init of each architecture {label: (backbone, options)}, one evaluate job
    each (the first job carries both)."""
    rows = []
    pending = list(architectures.items()) or [("-", None)]  # raw pixels alone where no method trained
    for i, (label, architecture) in enumerate(pending):
        sources = (["raw-pixels"] if i == 0 else []) + (["random-init"] if architecture else [])
        try:
            job, note = evaluate(client, dataset_id, sources, architecture, timeout_s)
        except JobFailed as exc:
            log.error("baselines %s: %s", sources, exc)
            rows += [Row(s, "-" if s == "raw-pixels" else label, note=str(exc), baseline=True) for s in sources]
            continue
        if i == 0:
            raw = baseline_scores(client, dataset_id, job["id"], "raw-pixels", None)
            rows.append(Row("raw-pixels", "-", scores=raw, baseline=True))
        if architecture:
            rows.append(Row("random-init", label, note=note, baseline=True,
                            scores=baseline_scores(client, dataset_id, job["id"], "random-init", architecture[0])))
    return rows


def evaluate_method(client: Client, row: Row, dataset_id: str, timeout_s: float) -> None:
    if not row.checkpoint:
        return
    try:
        job, _ = evaluate(client, dataset_id, [row.checkpoint], None, timeout_s)
    except JobFailed as exc:
        row.note = f"evaluation: {exc}"
        log.error("%s: %s", row.name, row.note)
        return
    row.scores = checkpoint_scores(client, row.checkpoint, job["id"])


# -------------------------------------------------------------------------------------------------- table

def beats_random_init(row: Row, rows: list[Row]) -> str:
    if row.baseline:
        return "-"
    reference = next((r for r in rows if r.baseline and r.name == "random-init" and r.backbone == row.backbone), None)
    ours, theirs = row.scores.get(LINEAR), reference.scores.get(LINEAR) if reference else None
    if ours is None or theirs is None:
        return "n/a"
    return "yes" if ours > theirs else "no"


def cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown_table(rows: list[Row]) -> list[str]:
    head = ["method", "backbone", "steps", "img/s", "compute s", *SCORE_COLUMNS, "beats random-init (linear)", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row in rows:
        values = [row.name, row.backbone, cell(row.steps, "d"), cell(row.img_per_s, ".0f"), cell(row.compute_s, ".1f")]
        values += [cell(row.scores.get(key), ".2f" if key[0] == "health" else ".4f") for key in SCORE_COLUMNS.values()]
        values += [beats_random_init(row, rows), row.note.replace("|", "/").replace("\n", " ")[:200]]
        lines.append("| " + " | ".join(values) + " |")
    return lines


def shortfalls(rows: list[Row]) -> list[str]:
    """The methods that do not beat their own random-init on the linear probe, and why."""
    out = []
    for row in rows:
        verdict = beats_random_init(row, rows)
        if verdict == "no":
            reference = next(r for r in rows if r.baseline and r.name == "random-init" and r.backbone == row.backbone)
            out.append(f"- {row.name} ({row.backbone}): linear top-1 {row.scores[LINEAR]:.4f} <= random-init "
                       f"{reference.scores[LINEAR]:.4f} after {row.steps} steps / {row.compute_s:.0f} CPU-s")
        elif verdict == "n/a":
            out.append(f"- {row.name} ({row.backbone}): no comparison ({row.note or 'a linear score is missing'})")
    return out


# --------------------------------------------------------------------------------------------------- main

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, default=240, help="CPU seconds of pretraining per method")
    parser.add_argument("--methods", default="", help="comma-separated; default: every registered image method")
    parser.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "digits"])
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--home", type=Path, default=Path(".darkmatter/bench-recipes"))
    parser.add_argument("--keep", action="store_true", help="keep the home directory (database, artifacts, logs)")
    parser.add_argument("--cnn-options", type=json.loads, default=CNN[1], help=f"default {json.dumps(CNN[1])}")
    parser.add_argument("--vit-options", type=json.loads, default=VIT[1], help=f"default {json.dumps(VIT[1])}")
    parser.add_argument("--method-options", type=json.loads, default={},
                        help='per method, options that replace the recipe\'s (a deviation the header states), '
                             'e.g. {"mae": {"decoder_dim": 128, "decoder_depth": 2}}')
    parser.add_argument("--calibration-steps", type=int, default=12)
    parser.add_argument("--eval-timeout-s", type=float, default=1800, help="wall-clock guard of each evaluate job")
    args = parser.parse_args()
    if not isinstance(args.method_options, dict) or not all(isinstance(v, dict) for v in args.method_options.values()):
        parser.error('--method-options takes {"method": {"option": value}}')
    return args


def header(args, dataset: dict, methods: dict[str, str], cnn: tuple, vit: tuple) -> list[str]:
    return [
        f"dataset {dataset['name']} ({dataset['id']}): {dataset['n_items']} train / {dataset['n_test']} test, "
        f"{dataset['n_classes']} classes; API + 1 worker on the embedded default; host CPUs {os.cpu_count()}",
        f"budget {args.budget_s:g} CPU-s of pretraining per method (steps = budget x calibrated img/s / recipe "
        f"batch, calibration {args.calibration_steps} steps); every other training setting is the method's small "
        f"recipe",
        f"deviation: backbone {cnn[0]} {json.dumps(cnn[1])} for CNN recipes, {vit[0]} {json.dumps(vit[1])} for "
        f"ViT recipes (the recipes' resnet18 / ViT are too slow for this CPU)",
        *([f"deviation: method options {json.dumps(args.method_options)} replace the recipes' own"]
          if args.method_options else []),
        f"methods: {', '.join(f'{m} ({b} -> {cpu_backbone(b, cnn, vit)[0]})' for m, b in methods.items())}",
        "evaluation: " + "; ".join(f"{p['protocol']} {json.dumps(p['options'])}" for p in PROTOCOLS),
    ]


def run(args, client: Client) -> list[str]:
    dataset = register_dataset(client, pick_dataset(args.dataset))
    wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
    methods = image_methods(client, wanted)
    stray = sorted(set(args.method_options) - set(methods))
    if stray:  # a misspelt method would otherwise run its recipe unchanged, the header claiming otherwise
        raise ValueError(f"--method-options names {', '.join(stray)}, not among the methods run: {', '.join(methods)}")
    cnn, vit = (CNN[0], args.cnn_options), (VIT[0], args.vit_options)
    out = header(args, dataset, methods, cnn, vit)
    for line in out:
        log.info(line)
    trained = []
    for method, recipe_backbone in methods.items():
        row = train_method(client, method, dataset["id"], cpu_backbone(recipe_backbone, cnn, vit), args)
        evaluate_method(client, row, dataset["id"], args.eval_timeout_s)
        trained.append(row)
        log.info("%s done: %s", method, {f"{p}/{m}": round(v, 4) for (p, m), v in row.scores.items()} or row.note)
    used = {row.backbone: row.architecture for row in trained if row.architecture}
    rows = evaluate_baselines(client, dataset["id"], used, args.eval_timeout_s) + trained
    out += ["", *markdown_table(rows), "", THRESHOLD]
    missing = shortfalls(rows)
    out += (["Methods that do not beat their own random-init on the linear probe at this budget:", *missing]
            if missing else ["Every method beats its own random-init on the linear probe at this budget."])
    return out


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = time.monotonic()
    procs, logs = start_service(args.home, args.port)
    client = Client(f"http://127.0.0.1:{args.port}", timeout=120)
    try:
        client.wait_ready(180)
        lines = run(args, client)
    except (ApiError, TimeoutError, ValueError) as exc:
        log.error("benchmark stopped: %s (logs kept in %s)", exc, args.home)
        return 1
    finally:
        processes.stop(procs)
        for f in logs:
            f.close()
    if not args.keep:
        shutil.rmtree(args.home, ignore_errors=True)
    print("\n".join(lines))
    print(f"\nwall time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
