"""The CI switch: with PIG_REQUIRE_SHARED_DATA=1 a missing ../shared/data fails the tests that need it."""

from pathlib import Path

import pytest

from conftest import shared_data_missing

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value", [None, "", "0"])
def test_missing_shared_data_skips_by_default(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("PIG_REQUIRE_SHARED_DATA", raising=False)
    else:
        monkeypatch.setenv("PIG_REQUIRE_SHARED_DATA", value)
    with pytest.raises(pytest.skip.Exception, match="not present"):
        shared_data_missing("shared data folder not present at /nowhere")


def test_missing_shared_data_fails_under_the_ci_switch(monkeypatch):
    monkeypatch.setenv("PIG_REQUIRE_SHARED_DATA", "1")
    with pytest.raises(pytest.fail.Exception, match="not present at /nowhere; PIG_REQUIRE_SHARED_DATA=1"):
        shared_data_missing("shared data folder not present at /nowhere")


def test_ci_entry_point_sets_the_switch_and_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    lines = [line.strip() for line in script.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert "export PIG_REQUIRE_SHARED_DATA=1" in lines
    assert lines[-1] == "make test" and lines.index("export PIG_REQUIRE_SHARED_DATA=1") < len(lines) - 1
    assert "make test" in (ROOT / "README.md").read_text()
