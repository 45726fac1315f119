"""Nearest-neighbour search over L2-normalised embeddings: exact cosine (a matrix product and
top-k), or approximate search on an HNSW graph (Malkov & Yashunin, arXiv:1603.09320) built with
faiss (Johnson et al., arXiv:1702.08734) when it is installed."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def build_hnsw(vectors: Tensor, m: int = 32, ef_construction: int = 200) -> Tensor:
    """A serialised faiss HNSW index (inner product on the normalised vectors) as a uint8 tensor."""
    import faiss

    x = np.ascontiguousarray(F.normalize(vectors.float(), dim=1).numpy())
    index = faiss.IndexHNSWFlat(x.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(x)
    return torch.from_numpy(faiss.serialize_index(index).copy())


def exact_search(vectors: Tensor, queries: Tensor, k: int, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """(cosine scores, indices), each (Q, k), highest first."""
    bank = F.normalize(vectors.float(), dim=1)
    k = min(k, len(bank))
    scores, idx = [], []
    for q in F.normalize(queries.float(), dim=1).split(chunk):
        s, i = (q @ bank.T).topk(k, dim=1)
        scores.append(s)
        idx.append(i)
    return torch.cat(scores), torch.cat(idx)


def load_hnsw(serialised: Tensor):
    """The faiss index of a serialised graph: deserialise once, search many times."""
    import faiss

    return faiss.deserialize_index(serialised.numpy())


def hnsw_search(index, queries: Tensor, k: int, ef_search: int = 128) -> tuple[Tensor, Tensor]:
    """index: a loaded faiss index (load_hnsw), or its serialised tensor."""
    if isinstance(index, Tensor):
        index = load_hnsw(index)
    index.hnsw.efSearch = max(ef_search, k)
    q = np.ascontiguousarray(F.normalize(queries.float(), dim=1).numpy())
    scores, idx = index.search(q, min(k, index.ntotal))
    return torch.from_numpy(scores), torch.from_numpy(idx).long()
