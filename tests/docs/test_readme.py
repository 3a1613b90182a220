"""The README's headline tables are the committed `mldd bench paper` report's, verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_headline_matches_the_committed_report() -> None:
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- headline:begin -->\n(.*?)\n<!-- headline:end -->", readme, flags=re.S)
    assert m is not None, "README lost its headline markers"
    report = (ROOT / "benchmarks" / "results" / "paper" / "report.md").read_text()
    table_lines = [ln for ln in m.group(1).splitlines() if ln.startswith("|")]
    assert len(table_lines) >= 12
    for line in table_lines:
        assert line in report, f"README line not in the committed report: {line}"


def test_readme_set_up_commands_are_the_makefile_targets() -> None:
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "make bench" in readme and "make test" in readme
    assert "mldd bench paper --quick" in makefile
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")
