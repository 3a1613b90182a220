"""DistributedExecutor on 2 spawned gloo processes, float64: collectives, ownership, counters,
failures raised on every rank, a hung rank ended by the timeout, and serial ≡ distributed.

Spawned processes take seconds to start (importing torch), so one session runs every stage
(:func:`dist_workers.suite`) and the tests below assert on its recorded per-rank outcomes.
"""

from __future__ import annotations

import time
from typing import Any, cast

import pytest
import torch
from dist_harness import run_ranks
from dist_workers import CASES, LAST_COSTS, cuda_checks, suite, toy_additive

from mldd.decomposition.distributed import (
    DEFAULT_TIMEOUT_S,
    TIMEOUT_ENV,
    ExecutorTimeoutError,
    default_backend,
    init_from_env,
    resolve_timeout,
)
from mldd.decomposition.executors import Executor, ExecutorError, SerialExecutor

F64 = 8
TIMEOUT_S = 1.5
SLEEP_S = 3.5


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict[str, Any]:
    t0 = time.monotonic()
    outs = run_ranks(suite, sorted(CASES), SLEEP_S, tmp_path=tmp_path_factory.mktemp("suite"),
                     timeout_s=TIMEOUT_S, deadline_s=90.0)
    wall = time.monotonic() - t0
    assert [o.status for o in outs] == ["ok", "ok"], outs
    return {"ranks": [o.value for o in outs], "wall_s": wall}


def _stage(stages: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r[name] for r in stages["ranks"]]


def test_collectives_owns_and_counters(stages) -> None:
    base = torch.arange(6, dtype=torch.float64)
    nc = torch.arange(12, dtype=torch.float64).reshape(3, 4).T
    for rank, rec in enumerate(_stage(stages, "collectives")):
        assert rec["status"] == "ok", rec
        v = rec["value"]
        assert v["rank"] == rank and v["world_size"] == 2 and v["timeout_s"] == TIMEOUT_S
        # (r + 1)·base + 0.25 summed over r = 0, 1.
        torch.testing.assert_close(v["sum"], 3 * base + 0.5, rtol=0, atol=0)
        assert v["dtype"] == "torch.float64" and v["input_unchanged"]
        torch.testing.assert_close(v["sum_nc"], 3 * nc, rtol=0, atol=0)
        assert float(v["scalar"]) == 4.5 and v["empty_shape"] == (0,)
        assert v["bytes_after_one"] == 6 * F64
        # 6 + 12 + 1 doubles in three collectives; the empty tensor is not communicated.
        assert v["counted"] == ((6 + 12 + 1) * F64, 3)
        assert v["guarded"] == 10 * rank + 1
        assert v["after_guard"] == ((6 + 12 + 1 + 1) * F64, 4)
        # Rank 0 waited in the all-reduce while rank 1 slept 0.3 s; rank 1 hardly waited.
        assert v["waited"] >= 0.2 if rank == 0 else v["waited"] < 0.2
        assert v["after_reset"] == (0, 0, 0.0)
        assert v["owns"] == ({2: [0], 3: [0, 2], 5: [0, 2, 4]} if rank == 0
                             else {2: [1], 3: [1], 5: [1, 3]})


@pytest.mark.parametrize(("stage", "failing"), [("fail-1", [1]), ("fail-both", [0, 1])])
def test_guarded_failure_raises_on_every_rank(stages, stage, failing) -> None:
    for rank, rec in enumerate(_stage(stages, stage)):
        assert rec["status"] == "raised", rec
        assert "ExecutorError" in rec["error_types"], rec
        assert "ExecutorTimeoutError" not in rec["error_types"]
        assert rec["ranks"] == failing
        assert f"rank(s) {', '.join(map(str, failing))} of 2" in rec["message"]
        for r in failing:
            assert f"rank {r}: ValueError: closure exploded on rank {r}" in rec["message"]
        # A failing rank chains its own exception; the others have none.
        assert rec["cause"] == ("ValueError" if rank in failing else None)
        assert rec["elapsed_s"] < 10.0


def test_handled_failure_keeps_the_group_usable(stages) -> None:
    for rec in _stage(stages, "after-failures"):
        assert rec["status"] == "ok", rec
        torch.testing.assert_close(rec["value"], torch.full((2,), 2.0, dtype=torch.float64))


def test_data_parallel_failure_raises_on_every_rank(stages) -> None:
    """A closure that raises on one rank's shard in the data-parallel global phase ends the step
    on every rank with ExecutorError at once (no rank waits for the timeout)."""
    for rank, rec in enumerate(_stage(stages, "dp-failure")):
        assert rec["status"] == "raised" and "ExecutorError" in rec["error_types"], rec
        assert "ExecutorTimeoutError" not in rec["error_types"]
        assert "data-parallel loss evaluation failed on 1 of 2 rank(s)" in rec["message"]
        if rank == 1:
            assert "shard closure exploded on rank 1" in rec["message"]
            assert rec["cause"] == "ValueError"
        assert rec["elapsed_s"] < 10.0
    for rec in _stage(stages, "after-dp-failure"):
        assert rec["status"] == "ok", rec


def test_hung_rank_ends_with_timeout_error(stages) -> None:
    waiting, sleeper = _stage(stages, "hang")
    assert waiting["status"] == "raised" and "ExecutorTimeoutError" in waiting["error_types"]
    assert f"{TIMEOUT_S:g} s timeout" in waiting["message"] and TIMEOUT_ENV in waiting["message"]
    assert waiting["elapsed_s"] < TIMEOUT_S + 5.0
    # The sleeper wakes to a peer that gave up: a clear error at once, not a hang.
    assert sleeper["status"] == "raised" and "ExecutorError" in sleeper["error_types"], sleeper
    assert sleeper["elapsed_s"] < SLEEP_S + TIMEOUT_S + 5.0
    # Afterwards the executor refuses further collectives with a message that says why.
    for rec in _stage(stages, "after-hang"):
        assert rec["status"] == "raised" and "earlier collective failed" in rec["message"]
    assert stages["wall_s"] < 90.0


@pytest.mark.parametrize("name", sorted(CASES))
def test_serial_and_distributed_iterates_agree(stages, name) -> None:
    LAST_COSTS.clear()
    ref = CASES[name](SerialExecutor())
    ref_costs = dict(LAST_COSTS)
    assert len(ref) >= 2 and not torch.equal(ref[0], ref[-1])
    busiest = []
    for rec in _stage(stages, f"case:{name}"):
        assert rec["status"] == "ok", rec
        xs = rec["value"]["iterates"]
        assert len(xs) == len(ref)
        for x, y in zip(xs, ref, strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-10)
        # Every rank reports the work of all ranks, as one process doing everything counts it.
        costs = rec["value"]["costs"]
        assert set(costs) == set(ref_costs)
        for key in ("grad_evals", "local_grad_evals"):
            if key in ref_costs:
                assert costs[key] == pytest.approx(ref_costs[key], rel=1e-12), (key, costs,
                                                                               ref_costs)
        if "local_grad_evals_max_rank" in costs:
            busiest.append(costs["local_grad_evals_max_rank"])
        assert rec["value"]["bytes"] > 0
        if "data-parallel" in name:
            # Global evaluations on this rank's 16 of the 32 rows, local solves on all 32.
            assert rec["value"]["seen_rows"] == [16, 32]
    if name != "toy-additive":  # an optimizer's case: it reports its costs
        # The busiest rank did part of the local work, not all of it (in one process: all).
        assert ref_costs["local_grad_evals_max_rank"] == pytest.approx(
            ref_costs["local_grad_evals"])
        assert busiest[0] == busiest[1] < ref_costs["local_grad_evals"]


def test_toy_case_exact_and_communication_counted(stages) -> None:
    n_outer = 4
    ref = toy_additive(SerialExecutor(), n_outer=n_outer)
    n = ref[0].numel()
    for rec in _stage(stages, "case:toy-additive"):
        for x, y in zip(rec["value"]["iterates"], ref, strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-12)
        # Per outer iteration: the failure flag (1 double) and the summed correction (n doubles).
        assert rec["value"]["n_collectives"] == 2 * n_outer
        assert rec["value"]["bytes"] == n_outer * (1 + n) * F64


def test_rank_agreement_adopts_rank0_clock(stages) -> None:
    for rec in _stage(stages, "agreement"):
        assert rec["status"] == "ok", rec
        assert rec["value"] == (1.25, 10)


def test_resolve_timeout(monkeypatch) -> None:
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert resolve_timeout() == DEFAULT_TIMEOUT_S == 300.0
    assert resolve_timeout(2) == 2.0
    monkeypatch.setenv(TIMEOUT_ENV, "12.5")
    assert resolve_timeout() == 12.5 and resolve_timeout(3.0) == 3.0
    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match=r"MLDD_DIST_TIMEOUT.*'soon'"):
        resolve_timeout()
    for bad in (0, -1.0, float("inf"), float("nan"), True, "5"):
        with pytest.raises(ValueError, match="timeout_s"):
            resolve_timeout(cast(Any, bad))


def test_default_backend(monkeypatch) -> None:
    import mldd.decomposition.distributed as mod

    monkeypatch.setattr(mod.torch.cuda, "is_available", lambda: False)
    assert default_backend() == "gloo"
    monkeypatch.setattr(mod.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(mod.torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(mod.dist, "is_nccl_available", lambda: True)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_backend() == "cpu:gloo,cuda:nccl"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two processes, one GPU: NCCL cannot be used
    assert default_backend() == "gloo"


def test_init_from_env_outside_a_launcher(monkeypatch) -> None:
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        init_from_env(timeout_s=5)


def test_error_types_and_serial_counters() -> None:
    assert isinstance(SerialExecutor(), Executor)
    assert issubclass(ExecutorTimeoutError, ExecutorError)
    assert ExecutorError("x", ranks=(1, 2)).ranks == [1, 2] and ExecutorError("y").ranks == []
    s = SerialExecutor()
    assert (s.bytes_communicated, s.n_collectives) == (0, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (NCCL back-end)")
def test_cuda_tensors_use_nccl(tmp_path) -> None:
    (o,) = run_ranks(cuda_checks, tmp_path=tmp_path, world_size=1, backend=None, timeout_s=60.0)
    assert o.status == "ok", o
    v = o.value
    assert "nccl" in v["backend"] and v["device"].startswith("cuda")
    assert v["dtype"] == "torch.float64" and v["equal"] and v["cpu_device"] == "cpu"
    assert v["failed"][1] == [0] and "ZeroDivisionError" in v["failed"][0]
    assert v["bytes"] == (5 + 3 + 1) * F64
