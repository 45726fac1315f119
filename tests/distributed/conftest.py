"""A local Ray cluster of two nodes on loopback (one CPU each, and a head with none; small object stores, no
dashboard), started and stopped by the tests that ask for it, in a temp dir of its own."""
from __future__ import annotations

import os
import tempfile

import pytest


RAY_NODE = dict(num_cpus=1, object_store_memory=100 * 2**20)


@pytest.fixture(scope="module")
def ray_cluster():
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "RAY_USAGE_STATS_ENABLED")}
    # short: Ray's socket paths live under it (a Unix socket path has ~100 characters)
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    os.environ.update(RAY_TMPDIR=temp, RAY_USAGE_STATS_ENABLED="0")
    # the head runs no training worker (no CPU to give), so a test may kill any node that does
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={**RAY_NODE, "num_cpus": 0, "include_dashboard": False})
    try:
        cluster.add_node(**RAY_NODE)
        cluster.add_node(**RAY_NODE)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        import shutil

        shutil.rmtree(temp, ignore_errors=True)
