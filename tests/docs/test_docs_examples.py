"""Every Python block of docs/examples.md runs, in order, in one namespace (like a notebook)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "examples.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_every_method_has_a_worked_example() -> None:
    text = DOC.read_text()
    for name in ("TrustRegion", "LBFGS", "MSPQN", "ASPQN", "APTS", "RMTR", "MGOpt", "MOFFO",
                 "nested_iteration"):
        assert f"mldd.optim.{name}(" in text or f"{name}(" in text, name


def test_docs_examples_run(capsys) -> None:
    namespace: dict[str, object] = {"__name__": "docs_examples"}
    blocks = _blocks()
    assert len(blocks) >= 9
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{DOC.name}[block {i}]", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"docs/examples.md block {i} failed: {exc}\n{code}") from exc
    out = capsys.readouterr().out
    assert "accuracy" in out and "rel. L2" in out
