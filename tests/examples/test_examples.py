"""The scripts in examples/ run end to end (tiny settings) and print what they promise."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _run(args: list[str], timeout: float = 240.0) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_plain_pytorch_loop_switched_to_mldd() -> None:
    out = _run([sys.executable, str(EXAMPLES / "plain_pytorch_to_mldd.py"), "--steps", "40"])
    m = re.search(r"mldd.optim.TrustRegion: 40 steps .* test accuracy (\d\.\d+)", out)
    assert m is not None, out
    assert float(m.group(1)) > 0.8  # 40 trust-region steps on digits
    assert "last step accepted" in out


def test_custom_pde_trains_with_two_methods() -> None:
    out = _run([sys.executable, str(EXAMPLES / "custom_pde.py"), "--budget", "1.5"])
    errors = [float(x) for x in re.findall(r"relative L2 error (\S+)", out)]
    assert len(errors) == 2 and all(e < 0.5 for e in errors), out


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent
                                                              / "torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_example_on_two_processes() -> None:
    torchrun = str(Path(sys.executable).parent / "torchrun")
    if not Path(torchrun).exists():
        torchrun = "torchrun"
    out = _run([torchrun, "--standalone", "--nproc_per_node", "2",
                str(EXAMPLES / "torchrun_aspqn.py"), "--iters", "2", "--points", "500"])
    assert "iteration   2" in out and "2 processes" in out, out
