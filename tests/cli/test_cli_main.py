"""The `mldd` command line: in-process smoke tests on tiny budgets, one real subprocess call."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mldd.train import suites
from mldd.train.cli import main


def test_problems_and_methods(capsys) -> None:
    assert main(["problems"]) == 0
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "torch-lbfgs" in out and "trust-region" in out and "adam-lbfgs" in out


def test_script_subprocess() -> None:
    exe = Path(sys.executable).parent / "mldd"
    if not exe.exists():
        pytest.skip("the mldd script is not installed (pip install -e .)")
    r = subprocess.run([str(exe), "problems"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "burgers" in r.stdout


def test_train_writes_run_dir(tmp_path, tiny: str, capsys) -> None:
    out = tmp_path / "run"
    code = main(["-q", "train", "--problem", tiny, "--method", "adam", "--budget", "0.3",
                 "--out", str(out), "--seed", "1", "--threads", "1", "--set", "method.lr=1e-2",
                 "--set", "problem.n=32", "--log-every", "0.05", "--checkpoint-every", "100"])
    assert code == 0
    for f in ("config.yaml", "metrics.csv", "model.pt", "summary.json", "vs_time.png",
              "vs_grad_evals.png", "checkpoint.pt"):
        assert (out / f).is_file(), f
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["method"] == {"name": "adam", "options": {"lr": 0.01}}
    assert cfg["problem"]["options"] == {"n": 32} and cfg["seed"] == 1
    s = json.loads((out / "summary.json").read_text())
    assert s["stop_reason"] == "budget_s" and s["threads"] == 1
    assert {"final_metric", "best_metric", "grad_evals", "iterations", "versions"} <= set(s)
    # The hyper-parameters it ran with: the option given and torch's defaults for the rest.
    assert s["optimizer"]["class"] == "Adam"
    hyper = s["optimizer"]["hyper_parameters"]
    assert hyper["lr"] == 0.01 and hyper["betas"] == [0.9, 0.999] and hyper["eps"] == 1e-8
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"time_s", "grad_evals", "loss", "rel_l2"} <= set(header)
    assert "rel_l2 final" in capsys.readouterr().out
    # Resume to a larger budget.
    code = main(["-q", "train", "--config", str(out / "config.yaml"), "--budget", "0.5",
                 "--resume", str(out / "checkpoint.pt"), "--no-plots"])
    assert code == 0
    s2 = json.loads((out / "summary.json").read_text())
    assert s2["iterations"] > s["iterations"]
    assert main(["plot", str(out)]) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--problem", "nope", "--method", "adam"], "unknown problem 'nope'"),
        (["train", "--problem", "{tiny}", "--method", "nope"], "unknown method 'nope'"),
        (["train", "--problem", "{tiny}", "--method", "adam", "--set", "method.lrr=1"],
         "no option 'lrr'"),
        (["train", "--problem", "{tiny}", "--method", "adam", "--set", "oops"], "key=value"),
        (["train", "--config", "missing.yaml"], "config file not found"),
        (["train", "--problem", "{tiny}", "--method", "adam", "--set", "method.lr_grid=[1e-3]",
          "--budget", "1"], "'lr_grid' is for `mldd bench`"),
        (["train", "--problem", "{tiny}", "--method", "aspqn", "--set", "method.model=foo"],
         "no option 'model'"),
        (["train", "--problem", "{tiny}", "--method", "adam", "--set", "method.betas=0.9",
          "--budget", "1"], "'betas' must be two numbers"),
        (["train", "--problem", "{tiny}", "--method", "trust-region", "--set",
          "method.reuse_evaluations=maybe", "--budget", "1"],
         "reuse_evaluations must be True or False, got 'maybe'"),
        (["bench", "core", "--threads", "0"], "--threads must be >= 1"),
        (["bench", "nope"], "unknown suite 'nope'"),
        (["plot", "."], "neither a run directory"),
    ],
)
def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys, tiny: str, argv, message) -> None:
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{tiny}", tiny) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_debug_shows_traceback(tiny: str) -> None:
    from mldd.train.config import ConfigError

    with pytest.raises(ConfigError):
        main(["--debug", "train", "--problem", "nope", "--method", "adam"])


def test_bench_cli(tmp_path, tiny: str, monkeypatch, capsys) -> None:
    suite = {
        "description": "cli test",
        "budget_s": 0.3,
        "seeds": 1,
        "threads": 1,
        "groups": [{
            "problems": {tiny: {}},
            "methods": [{"label": "sgd", "method": "sgd", "options": {}},
                        {"label": "torch-lbfgs-h3", "method": "torch-lbfgs",
                         "options": {"history": 3}}],
            "baseline": "torch-lbfgs-h3",
            "targets": [{"name": "L-BFGS h3", "labels": ["torch-lbfgs-h3"]}],
        }],
        "quick": {"budget_factor": 3},
    }
    monkeypatch.setitem(suites.SUITES, "test-tiny", suite)
    out = tmp_path / "b"
    assert main(["-q", "bench", "test-tiny", "--out", str(out), "--budget", "0.2"]) == 0
    report = (out / "report.md").read_text()
    assert "0.2 s of training time" in report and "`sgd`" in report
    assert main(["plot", str(out)]) == 0
    assert (out / f"{tiny}_vs_time.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["--jobs", "0"], "--jobs must be >= 1, got 0"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
    (["--seeds", "0"], "--seeds must be >= 1, got 0"),
    (["--budget", "-1"], "--budget must be positive, got -1.0"),
    (["--problems", "heat"], "unknown problem 'heat' for this suite"),
])
def test_bench_paper_bad_arguments(tmp_path, capsys, args: list[str], message: str) -> None:
    """Bad options of `mldd bench paper` stop before anything runs, naming the bad value."""
    code = main(["-q", "bench", "paper", "--out", str(tmp_path / "p"), *args])
    assert code != 0
    captured = capsys.readouterr()
    assert message in captured.out + captured.err
    assert not (tmp_path / "p" / "bench.json").exists()


def test_resume_refuses_other_runs_and_a_fresh_run_clears_the_old_checkpoint(
        tmp_path, tiny: str, capsys) -> None:
    out = tmp_path / "run"
    base = ["-q", "train", "--problem", tiny, "--budget", "0.2", "--threads", "1", "--no-plots"]
    assert main([*base, "--method", "trust-region", "--out", str(out),
                 "--checkpoint-every", "100"]) == 0
    ck = out / "checkpoint.pt"
    assert ck.is_file()
    capsys.readouterr()
    cases = [
        (["--method", "adam"], "written by a run with method 'trust-region'; this run's "
                               "method is 'adam'"),
        (["--method", "trust-region", "--set", "problem.n=7"], None),  # same names: loads
    ]
    for extra, message in cases:
        code = main([*base, *extra, "--out", str(tmp_path / "other"), "--resume", str(ck)])
        err = capsys.readouterr().err
        if message is None:
            assert code == 0, err
        else:
            assert code == 2 and message in err
            assert not (tmp_path / "other").exists()  # nothing written for a refused run
    bad = tmp_path / "garbage.pt"
    bad.write_text("garbage\n")
    assert main([*base, "--method", "adam", "--out", str(tmp_path / "g"), "--resume",
                 str(bad)]) == 2
    assert "cannot read checkpoint" in capsys.readouterr().err
    assert main([*base, "--method", "adam", "--out", str(tmp_path / "g"), "--resume",
                 str(tmp_path / "missing.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    # A fresh run (no --resume) into the old directory removes the old run's checkpoint.
    assert main([*base, "--method", "adam", "--out", str(out)]) == 0
    assert not ck.exists()


def test_import_registers_user_problems(tmp_path, capsys) -> None:
    from mldd.problems import registry
    from mldd.train import user_modules

    mod = tmp_path / "my_problems.py"
    mod.write_text(
        "from mldd.problems import get\n"
        "from mldd.problems.registry import register\n\n"
        "@register('imported-poisson', 'a user problem (test)')\n"
        "def build(**kw):\n"
        "    return get('poisson2d', n_collocation=64, width=6, depth=2,\n"
        "               reference_options={'n_eval': 11}, **kw)\n\n"
        "from mldd.train.suites import register_suite\n"
        "register_suite('imported-suite', {'description': 'test', 'budget_s': 0.2, 'seeds': 1,\n"
        "    'threads': 1, 'groups': [{'problems': {'imported-poisson': {}},\n"
        "    'methods': [{'label': 'tr', 'method': 'trust-region', 'options': {}}],\n"
        "    'baseline': 'tr', 'targets': []}]})\n")
    try:
        out = tmp_path / "run"
        assert main(["-q", "train", "--import", str(mod), "--problem", "imported-poisson",
                     "--method", "trust-region", "--budget", "0.2", "--threads", "1",
                     "--out", str(out), "--no-plots"]) == 0
        assert (out / "summary.json").is_file()
        bench = tmp_path / "bench"
        assert main(["-q", "bench", "imported-suite", "--import", str(mod), "--out", str(bench),
                     "--no-plots"]) == 0
        assert "imported-poisson" in (bench / "report.md").read_text()
        assert main(["--import", str(tmp_path / "missing.py"), "problems"]) == 2
        assert "no such file" in capsys.readouterr().err
        assert main(["--import", "no_such_module_xyz", "problems"]) == 2
        assert "No module named 'no_such_module_xyz'" in capsys.readouterr().err
    finally:
        registry._REGISTRY.pop("imported-poisson", None)
        registry._DESCRIPTIONS.pop("imported-poisson", None)
        suites.SUITES.pop("imported-suite", None)
        if str(mod) in user_modules.IMPORTED:
            user_modules.IMPORTED.remove(str(mod))
