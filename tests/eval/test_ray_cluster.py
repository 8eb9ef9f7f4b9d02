"""The Ray executor on a simulated two-node cluster (``ray.cluster_utils.Cluster``: a head and a worker node of one
CPU each, one cluster for the module): the two replicas land on different nodes and the sweep gives the local
executor's units; a replica killed with a job in flight, or a whole node removed mid-sweep, loses and duplicates
nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.eval.conftest import write_table
from tests.eval.test_ray_local import JOBS, LIMIT, UNITS, counts, kill_one_busy_replica, sweep_cfg, units
from thinkscale.eval.executors import RayExecutor, RayOptions
from thinkscale.eval.runner import run_sweep

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[Any]:
    # a node that stops answering is declared dead after ~2 s instead of the default ~30 s
    fast = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_timeout_ms": 500,
            "health_check_failure_threshold": 3}
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "_system_config": fast})
    worker = cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        yield cluster, worker
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[Any, ...]]]:
    tmp = tmp_path_factory.mktemp("ray-cluster-ref")
    table = write_table(tmp / "table.json", limit=LIMIT, seconds_per_token=0.01)
    run_sweep(sweep_cfg(table), tmp / "local")
    return table, units(tmp / "local")


def test_two_replicas_on_two_nodes_give_the_local_executors_units(
        two_nodes: Any, reference: tuple[Path, list[tuple[Any, ...]]], tmp_path: Path) -> None:
    """One CPU per node and one per replica: Ray can only place them on different nodes."""
    table, expected = reference
    ex = RayExecutor(RayOptions(replicas=2, cpus_per_replica=1))
    nodes: set[str] = set()

    def on_progress(p: object) -> None:
        if not nodes and ex.current is not None:
            nodes.update(w["node_id"] for w in ray.get([a.where.remote() for a in ex.current.actors()]))

    s = run_sweep(sweep_cfg(table), tmp_path / "ray", executor=ex, on_progress=on_progress)
    assert len(nodes) == 2
    assert s.jobs_run == JOBS
    assert units(tmp_path / "ray") == expected


def test_a_replica_killed_on_a_cluster_loses_and_duplicates_nothing(
        two_nodes: Any, reference: tuple[Path, list[tuple[Any, ...]]], tmp_path: Path) -> None:
    table, expected = reference
    ex = RayExecutor(RayOptions(replicas=2, cpus_per_replica=1))
    kw = kill_one_busy_replica(ex, after_jobs=2)
    state = kw.pop("_state")
    s = run_sweep(sweep_cfg(table), tmp_path / "ray", executor=ex, **kw)
    assert state["killed"] == 1 and ex.current is not None and ex.current.replaced == 1
    assert s.jobs_run == JOBS
    assert counts(tmp_path / "ray") == (JOBS, UNITS)
    assert units(tmp_path / "ray") == expected


def test_a_node_removed_mid_sweep_loses_and_duplicates_nothing(
        two_nodes: Any, reference: tuple[Path, list[tuple[Any, ...]]], tmp_path: Path) -> None:
    """The worker node goes away with a replica and its job in flight (last in the module: the cluster keeps one
    node). The job runs again on the head's replica; the replacement has no CPU to start on, and is not needed."""
    cluster, worker = two_nodes
    table, expected = reference
    ex = RayExecutor(RayOptions(replicas=2, cpus_per_replica=1))
    removed: list[float] = []
    node_of: dict[Any, str] = {}

    def on_progress(p: object) -> None:
        run = ex.current
        if removed or run is None:
            return
        if not node_of:
            node_of.update((a, ray.get(a.where.remote())["node_id"]) for a in run.actors())
        if any(node_of.get(a) == worker.node_id for a in run.busy_replicas()):
            cluster.remove_node(worker, allow_graceful=False)
            removed.append(time.monotonic())

    s = run_sweep(sweep_cfg(table), tmp_path / "ray", executor=ex, on_progress=on_progress)
    assert removed and ex.current is not None and ex.current.replaced == 1
    assert s.jobs_run == JOBS
    assert counts(tmp_path / "ray") == (JOBS, UNITS)
    assert units(tmp_path / "ray") == expected
