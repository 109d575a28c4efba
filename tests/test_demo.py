"""Smoke test of the main demo (``python -m benchmarks.demo --quick``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import demo


def test_quick_demo_writes_table_json_and_plot(
  tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
  demo.main(["--quick", "--out", str(tmp_path), "--no-progress"])
  printed = capsys.readouterr().out
  results = json.loads((tmp_path / "demo.json").read_text())
  assert (
    [row["method"] for row in results["rows"]] == list(demo.SETTINGS) == ["SGD", "SAM", "fSGLD"]
  )
  for row in results["rows"]:
    assert 0.0 <= row["final_test_acc"] <= row["best_test_acc"] <= 1.0
    assert row["ms_per_step"] > 0
    assert row["method"] in printed
  assert results["rows"][0]["time_vs_sgd"] == 1.0
  assert results["timing"]["ms_per_step"][demo.CHEAP] > 0
  assert all(len(h) == 2 for h in results["histories"].values())
  assert "| fSGLD |" in (tmp_path / "demo.md").read_text()
  assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
