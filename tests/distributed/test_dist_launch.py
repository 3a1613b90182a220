"""``mldd train --nproc N``: the launcher's pieces, and one real 2-process run through torchrun."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mldd.decomposition.executors import SerialExecutor
from mldd.train.cli import main
from mldd.train.launch import (
    current_executor,
    is_main_process,
    strip_nproc,
    torchrun_command,
    worker_threads,
    world_size,
)


@pytest.mark.parametrize(("argv", "expected"), [
    (["train", "--nproc", "2", "--seed", "1"], ["train", "--seed", "1"]),
    (["train", "--nproc=3"], ["train"]),
    (["-q", "train", "--npro", "2", "--no-plots"], ["-q", "train", "--no-plots"]),
    (["train", "--no-plots", "--out", "x"], ["train", "--no-plots", "--out", "x"]),
])
def test_strip_nproc(argv, expected) -> None:
    assert strip_nproc(argv) == expected


def test_torchrun_command() -> None:
    cmd = torchrun_command(["train", "--method", "aspqn", "--nproc", "4"], 4)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert cmd[3:] == ["--nproc_per_node", "4", "--standalone", "-m", "mldd.train.cli",
                       "train", "--method", "aspqn"]
    with pytest.raises(ValueError, match="nproc must be >= 2"):
        torchrun_command(["train"], 1)


def test_worker_threads() -> None:
    assert [worker_threads(t, n) for t, n in ((2, 2), (8, 3), (1, 4), (4, 1))] == [1, 2, 1, 4]
    with pytest.raises(ValueError, match="threads=0"):
        worker_threads(0, 2)


def test_process_identity_from_env(monkeypatch) -> None:
    for k in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(k, raising=False)
    assert world_size() == 1 and is_main_process()
    assert isinstance(current_executor(), SerialExecutor)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert isinstance(current_executor(), SerialExecutor)
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match=r"WORLD_SIZE.*'two'"):
        world_size()


def test_cli_rejects_bad_nproc(capsys) -> None:
    assert main(["train", "--problem", "poisson2d", "--method", "adam", "--nproc", "0"]) == 2
    assert "--nproc must be >= 1, got 0" in capsys.readouterr().err


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and all its descendants (torchrun's workers live in their own sessions,
    so killing a process group would miss them)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    todo, tree = [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    for p in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def test_mldd_train_nproc_2_end_to_end(tmp_path) -> None:
    """Two workers under torchrun: rank 0 alone writes the run directory and prints; the
    workers stop together on the time budget (rank 0's clock) and the run exits 0."""
    out = tmp_path / "run"
    env = dict(os.environ, MLDD_DIST_TIMEOUT="60")
    cmd = [sys.executable, "-m", "mldd.train.cli", "-q", "train", "--problem", "poisson2d",
           "--method", "trust-region", "--budget", "0.6", "--log-every", "0.1",
           "--set", "problem.n_collocation=64", "--set", "problem.width=8",
           "--set", "problem.depth=2", "--threads", "2", "--checkpoint-every", "100",
           "--no-plots", "--out", str(out), "--nproc", "2"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        _kill_tree(proc.pid)
        stdout, stderr = proc.communicate()
        pytest.fail(f"mldd train --nproc 2 did not finish in 150 s:\n{stdout}\n{stderr}")
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert stdout.count("rel_l2 final") == 1, stdout  # rank 0 only
    s = json.loads((out / "summary.json").read_text())
    assert s["processes"] == 2 and s["threads"] == 2 and s["threads_per_process"] == 1
    assert len(s["machine_probe_ms"]) == 2 and min(s["machine_probe_ms"]) > 0
    assert s["stop_reason"] == "budget_s" and s["iterations"] > 0
    for f in ("config.yaml", "metrics.csv", "model.pt", "checkpoint.pt"):
        assert (out / f).is_file(), f
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing else written
