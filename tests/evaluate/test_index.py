"""Exact cosine search against numpy, and the HNSW graph's recall against exact search."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.checkpoint import load_tree, save_tree
from core.index import build_hnsw, exact_search, faiss_available, hnsw_search


def data(n=2000, q=50, d=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen), torch.randn(q, d, generator=gen)


def test_exact_search_matches_numpy():
    bank, queries = data(n=300, q=7, d=5)
    scores, idx = exact_search(bank, queries, k=4, chunk=3)
    b = bank.numpy() / np.linalg.norm(bank.numpy(), axis=1, keepdims=True)
    q = queries.numpy() / np.linalg.norm(queries.numpy(), axis=1, keepdims=True)
    sims = q @ b.T
    expected = np.argsort(-sims, axis=1)[:, :4]
    assert (idx.numpy() == expected).all()
    assert scores.numpy() == pytest.approx(np.take_along_axis(sims, expected, 1), abs=1e-5)
    assert exact_search(bank[:2], queries, k=10)[1].shape == (7, 2)  # k capped at the bank size


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu is not installed")
def test_hnsw_recall_against_exact_after_a_safetensors_round_trip(tmp_path):
    bank, queries = data()
    save_tree(tmp_path / "i.safetensors", {"hnsw": build_hnsw(bank)})
    graph = load_tree(tmp_path / "i.safetensors")[0]["hnsw"]
    _, approx = hnsw_search(graph, queries, k=10)
    _, exact = exact_search(bank, queries, k=10)
    recall = np.mean([len(set(a.tolist()) & set(e.tolist())) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.95, recall
    self_hits, _ = hnsw_search(graph, bank[:20], k=1)
    assert self_hits.squeeze(1).numpy() == pytest.approx(1.0, abs=1e-4)
