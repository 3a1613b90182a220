"""Config: files, overrides, validation errors, dump."""

from __future__ import annotations

import pytest
import yaml

from mldd.train.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    dump_yaml,
    from_dict,
    parse_override,
    problem_kwargs,
    resolve,
)


def test_parse_override_values() -> None:
    assert parse_override("method.lr=1e-2") == (["method", "lr"], 0.01)
    assert parse_override("budget_s=30") == (["budget_s"], 30)
    assert parse_override("method.lr_grid=[1e-3, 1e-2]")[1] == [0.001, 0.01]
    assert parse_override("target=null")[1] is None
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("method.lr")


def test_overrides_dotted() -> None:
    d = apply_overrides(
        {"problem": "burgers", "method": {"name": "adam", "lr": 1e-3}},
        ["method.lr=1e-2", "problem.n_collocation=2000", "method.options.betas=[0.9, 0.99]",
         "seed=3", "problem.name=poisson2d"],
    )
    cfg = from_dict(d)
    assert cfg.method.name == "adam" and cfg.method.options == {"lr": 0.01, "betas": [0.9, 0.99]}
    assert cfg.problem.name == "poisson2d" and cfg.problem.options == {"n_collocation": 2000}
    assert cfg.seed == 3 and cfg.threads == 2 and cfg.budget_s == 60.0


def test_overrides_reach_nested_options() -> None:
    """method.hierarchy_options.data_ratio=… sets one entry and keeps the mapping's others; a
    scalar option has no sub-keys."""
    base = {"problem": "burgers",
            "method": {"name": "rmtr", "hierarchy_options": {"data_ratio": 0.125, "seed": 1}}}
    d = apply_overrides(base, ["method.hierarchy_options.data_ratio=0.0625",
                               "method.options.extra.deep.key=3"])
    opts = from_dict(d).method.options
    assert opts["hierarchy_options"] == {"data_ratio": 0.0625, "seed": 1}
    assert opts["extra"] == {"deep": {"key": 3}}
    assert base["method"]["hierarchy_options"]["data_ratio"] == 0.125  # input not modified
    with pytest.raises(ConfigError, match=r"method.lr is 0.001, not a mapping"):
        apply_overrides({"problem": "p", "method": {"name": "adam", "lr": 1e-3}},
                        ["method.lr.x=1"])
    with pytest.raises(ConfigError, match=r"expected method.OPTION=value"):
        apply_overrides({}, ["method.options=1"])


def test_unknown_keys_and_values() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'budget' .*allowed: .*budget_s"):
        from_dict({"problem": "p", "method": "m", "budget": 3})
    with pytest.raises(ConfigError, match="unknown key 'bugdet_s'"):
        apply_overrides({}, ["bugdet_s=3"])
    with pytest.raises(ConfigError, match=r"'threads': bad value 'two'"):
        from_dict({"problem": "p", "method": "m", "threads": "two"})
    with pytest.raises(ConfigError, match=r"'dtype': bad value 'float16'"):
        from_dict({"problem": "p", "method": "m", "dtype": "float16"})
    with pytest.raises(ConfigError, match="'budget_s': bad value -1"):
        from_dict({"problem": "p", "method": "m", "budget_s": -1})
    with pytest.raises(ConfigError, match="needs a 'method'"):
        from_dict({"problem": "p"})
    with pytest.raises(ConfigError, match="at least one budget"):
        from_dict({"problem": "p", "method": "m", "budget_s": None})


def test_validate_against_registries(tiny: str) -> None:
    cfg = resolve(None, [], {"problem": tiny, "method": "adam"})
    assert cfg.problem.name == tiny
    with pytest.raises(ConfigError, match=r"no option 'lrr'.*allowed: .*lr"):
        resolve(None, ["method.lrr=1"], {"problem": tiny, "method": "adam"})
    with pytest.raises(ConfigError, match=r"has no option 'm' \(value 3\); allowed: n"):
        resolve(None, ["problem.m=3"], {"problem": tiny, "method": "adam"})
    with pytest.raises(ConfigError, match=r"unknown problem 'nope'; known problems: .*"):
        resolve(None, [], {"problem": "nope", "method": "adam"})
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        resolve(None, [], {"problem": tiny, "method": "nope"})


def test_files_and_dump(tmp_path, tiny: str) -> None:
    y = tmp_path / "run.yaml"
    y.write_text(f"problem: {{name: {tiny}, options: {{n: 32}}}}\nmethod: {{name: sgd, lr: 0.1}}\n"
                 "budget_s: 5\n")
    cfg = resolve(y, ["method.lr=0.2"], {"seed": 4})
    assert cfg.method.options == {"lr": 0.2} and cfg.problem.options == {"n": 32}
    assert cfg.seed == 4 and cfg.budget_s == 5.0
    t = tmp_path / "run.toml"
    t.write_text(f'budget_s = 2\n[problem]\nname = "{tiny}"\n[method]\nname = "adam"\n'
                 "[method.options]\nlr = 0.01\n")
    cfg2 = resolve(t)
    assert cfg2.method.options == {"lr": 0.01}
    # A --method flag with another name drops the file's options.
    cfg3 = resolve(y, [], {"method": "adam"})
    assert cfg3.method.name == "adam" and cfg3.method.options == {}
    back = from_dict(yaml.safe_load(dump_yaml(cfg, tmp_path / "c.yaml")))
    assert back == cfg and isinstance(back, RunConfig)
    with pytest.raises(ConfigError, match="not found"):
        resolve(tmp_path / "missing.yaml")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ConfigError, match="unknown extension"):
        resolve(tmp_path / "x.json")


def test_dtype_goes_to_problem(tiny: str) -> None:
    import torch

    cfg = resolve(None, [], {"problem": tiny, "method": "adam", "dtype": "float32"})
    assert problem_kwargs(cfg)["dtype"] is torch.float32
