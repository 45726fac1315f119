"""`darkmatter embed`, `neighbors` and `scores`: using what pretraining made; `usage`: what it stores."""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated, Optional

import typer

from client.cli.common import (DEFAULT_URL, Json, Key, Url, connect, console, fail, handles_errors, human_bytes,
                               make_table, print_json, print_table)


def image_inputs(paths: list[Path]) -> list[str]:
    """Image files as base64 strings (the server decodes PNG, JPEG, …)."""
    inputs = []
    for path in paths:
        try:
            inputs.append(base64.b64encode(path.read_bytes()).decode())
        except OSError as exc:
            raise fail(f"cannot read {path}: {exc.strerror or exc}", "give image files (PNG, JPEG)")
    return inputs


def embed(checkpoint: Annotated[str, typer.Argument(help="a checkpoint id")],
          inputs: Annotated[list[str], typer.Argument(metavar="INPUT...", help="image files, or texts for a text "
                                                                               "checkpoint")],
          output: Annotated[Optional[Path], typer.Option("--output", "-o", help="save the (N, D) array as .npy")] = None,
          url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """Embed image files (or texts, for a text checkpoint) with a checkpoint's backbone:
    `darkmatter embed ckpt_… cat.png` or `darkmatter embed ckpt_… "a sentence"`."""
    files = [Path(i) for i in inputs if Path(i).is_file()]
    if files and len(files) != len(inputs):
        missing = next(i for i in inputs if not Path(i).is_file())
        raise fail(f"{missing} is not a file, and the other inputs are image files",
                   "give image files only, or texts only (quote each text)")
    vectors = connect(url, api_key).embeddings(checkpoint, image_inputs(files) if files else list(inputs))
    if output:
        import numpy as np

        np.save(output, vectors)
    if as_json:
        print_json({"model": checkpoint, "dimensions": int(vectors.shape[1]), "data": vectors.tolist()})
        return
    console.print(f"{vectors.shape[0]} embeddings of dimension {vectors.shape[1]}" +
                  (f", saved to {output}" if output else ""), soft_wrap=True)
    for name, vector in zip([f.name for f in files] or [shorten(i) for i in inputs], vectors):
        console.print(f"  {name}: [{', '.join(f'{v:.4f}' for v in vector[:6])}, …]  norm {float((vector ** 2).sum()) ** .5:.3f}",
                      soft_wrap=True)


def shorten(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[:width - 1] + "…")


def neighbors(index: Annotated[str, typer.Argument(help="an embed-index job id")],
              queries: Annotated[list[str], typer.Argument(
                  metavar="QUERY...", help="item ids of the indexed split, image files, or texts for a text index")],
              k: Annotated[int, typer.Option("-k", help="how many neighbours")] = 10,
              url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """The k nearest items of an embed-index job for item ids, image files, or texts (a text index)."""
    query = [int(q) if q.isdigit() else image_inputs([Path(q)])[0] if Path(q).is_file() else q for q in queries]
    answer = connect(url, api_key).neighbors(index, query, k=k)
    if as_json:
        print_json(answer)
        return
    for q, row in zip(queries, answer["data"]):
        where = answer.get("dataset_name") or answer["dataset"]
        table = make_table("rank", "item", "class", "cosine", title=f"neighbours of {q} in {where} ({answer['search']})")
        for rank, n in enumerate(row["neighbors"], 1):
            table.add_row(str(rank), str(n["item"]), str(n.get("class") or n["label"]), f"{n['score']:.4f}")
        print_table(table)


def direction_label(row: dict) -> str:
    return {"higher": "↑", "lower": "↓"}.get(row.get("direction"), "·")


def scores(dataset: Optional[str] = None, protocol: Optional[str] = None, metric: Optional[str] = None,
           method: Optional[str] = None, url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """The leaderboard: mean ± std over seeds per configuration (method, backbone, recipe, options),
    ranked by each metric's direction (↑ higher is better, ↓ lower, · not ranked)."""
    answer = connect(url, api_key).scores(dataset=dataset, protocol=protocol, metric=metric, method=method)
    if as_json:
        print_json(answer)
        return
    table = make_table("rank", "method", "backbone", "recipe", "dataset", "protocol", "metric", "mean ± std", "n",
                       "runs", "per compute-hour", "checkpoint")
    for row in answer["leaderboard"]:
        per_hour = row.get("score_per_compute_hour")
        spread = f"{row['mean']:.4g}" + (f" ± {row['std']:.2g}" if row.get("std") is not None else "")
        table.add_row("" if row.get("rank") is None else str(row["rank"]), row["method"] or "", row.get("backbone") or "",
                      row.get("recipe") or "", row.get("dataset_name") or row["dataset"], row["protocol"],
                      f"{row['metric']} {direction_label(row)}", spread, str(row["n"]), str(row["runs"]),
                      f"{per_hour:.4g}" if per_hour else "", row.get("checkpoint") or "")
    if answer["leaderboard"]:
        print_table(table)
    else:
        console.print("no scores yet")


def usage(url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """Your project's quotas: datasets, stored bytes and active jobs, used against each limit."""
    answer = connect(url, api_key).usage()
    if as_json:
        print_json(answer)
        return
    table = make_table("quota", "used", "limit")
    for name in ("datasets", "stored_bytes", "active_jobs"):
        used, limit = answer[name]["used"], answer[name]["limit"]
        show = human_bytes if name == "stored_bytes" else str
        table.add_row(name.replace("_", " "), show(used), show(limit) if limit else "unlimited")
    print_table(table)


def register(app: typer.Typer) -> None:
    for command in (embed, neighbors, scores, usage):
        app.command(command.__name__)(handles_errors(command))
