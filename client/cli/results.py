"""`darkmatter embed`, `neighbors` and `scores`: using what pretraining made; `usage`: what it stores."""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from client.cli.common import (DEFAULT_URL, Json, Key, Url, connect, console, fail, handles_errors, human_bytes,
                               print_json)


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
          images: Annotated[list[Path], typer.Argument(help="image files")],
          output: Annotated[Optional[Path], typer.Option("--output", "-o", help="save the (N, D) array as .npy")] = None,
          url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """Embed image files with a checkpoint's backbone."""
    vectors = connect(url, api_key).embeddings(checkpoint, image_inputs(images))
    if output:
        import numpy as np

        np.save(output, vectors)
    if as_json:
        print_json({"model": checkpoint, "dimensions": int(vectors.shape[1]), "data": vectors.tolist()})
        return
    console.print(f"{vectors.shape[0]} embeddings of dimension {vectors.shape[1]}" +
                  (f", saved to {output}" if output else ""), soft_wrap=True)
    for path, vector in zip(images, vectors):
        console.print(f"  {path.name}: [{', '.join(f'{v:.4f}' for v in vector[:6])}, …]  norm {float((vector ** 2).sum()) ** .5:.3f}",
                      soft_wrap=True)


def neighbors(index: Annotated[str, typer.Argument(help="an embed-index job id")],
              queries: Annotated[list[str], typer.Argument(help="item ids of the indexed split, or image files")],
              k: Annotated[int, typer.Option("-k", help="how many neighbours")] = 10,
              url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """The k nearest items of an embed-index job for item ids or image files."""
    query = [int(q) if q.isdigit() else image_inputs([Path(q)])[0] for q in queries]
    answer = connect(url, api_key).neighbors(index, query, k=k)
    if as_json:
        print_json(answer)
        return
    for q, row in zip(queries, answer["data"]):
        table = Table("rank", "item", "label", "cosine", title=f"neighbours of {q} ({answer['search']})")
        for rank, n in enumerate(row["neighbors"], 1):
            table.add_row(str(rank), str(n["item"]), str(n["label"]), f"{n['score']:.4f}")
        console.print(table)


def scores(dataset: Optional[str] = None, protocol: Optional[str] = None, metric: Optional[str] = None,
           method: Optional[str] = None, url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """The leaderboard: the best score per method, dataset, protocol and metric, with score per compute-hour."""
    answer = connect(url, api_key).scores(dataset=dataset, protocol=protocol, metric=metric, method=method)
    if as_json:
        print_json(answer)
        return
    table = Table("method", "dataset", "protocol", "metric", "best", "per compute-hour", "runs", "checkpoint")
    for row in answer["leaderboard"]:
        per_hour = row.get("score_per_compute_hour")
        table.add_row(row["method"] or "", row["dataset"], row["protocol"], row["metric"], f"{row['best']:.4f}",
                      f"{per_hour:.1f}" if per_hour else "", str(row["runs"]), row.get("checkpoint") or "")
    console.print(table if answer["leaderboard"] else "no scores yet")


def usage(url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """Your project's quotas: datasets, stored bytes and active jobs, used against each limit."""
    answer = connect(url, api_key).usage()
    if as_json:
        print_json(answer)
        return
    table = Table("quota", "used", "limit")
    for name in ("datasets", "stored_bytes", "active_jobs"):
        used, limit = answer[name]["used"], answer[name]["limit"]
        show = human_bytes if name == "stored_bytes" else str
        table.add_row(name.replace("_", " "), show(used), show(limit) if limit else "unlimited")
    console.print(table)


def register(app: typer.Typer) -> None:
    for command in (embed, neighbors, scores, usage):
        app.command(command.__name__)(handles_errors(command))
