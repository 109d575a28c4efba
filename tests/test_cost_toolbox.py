"""Smoke test of the toolbox rows of the cost benchmark: ``python -m benchmarks.cost --toolbox
--quick`` (fSGHMC against SGD-M, RWP-AdamW and SAM-AdamW against AdamW, memory against n)."""

import json

import pytest

from benchmarks import cost


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("cost_toolbox")
  results = cost.main(["--toolbox", "--quick", "--no-progress", "--out", str(out)])
  return out, results


def test_rows_are_timed_against_their_base_optimizer(quick_run):
  out, results = quick_run
  assert json.loads((out / "cost_toolbox.json").read_text()) == json.loads(json.dumps(results))
  (workload,) = results["workloads"]
  rows = {r["name"]: r for r in workload["rows"]}
  assert list(rows) == [m.name for m in cost.TOOLBOX_QUICK.workloads[0].methods]
  for name, base in (
    ("fSGHMC (default)", "SGD-M"),
    ("fSGHMC (cheap)", "SGD-M"),
    ("RWP-AdamW", "AdamW"),
    ("RWP-AdamW (filter)", "AdamW"),
    ("SAM-AdamW", "AdamW"),
  ):
    assert rows[name]["ratio_to_baseline"] == pytest.approx(
      rows[name]["median_s"] / rows[base]["median_s"]
    )
  for name, row in rows.items():
    assert row["compile_s"] > 0 and row["memory"]["temp"] is not None, name
    if name.startswith("fSGLD"):  # compiled for memory and compile time only in quick mode
      assert row["median_s"] is None and row["ratio_to_baseline"] is None
  report = (out / "cost_toolbox.md").read_text()
  assert "| fSGHMC (cheap) | SGD-M |" in report and "not timed" in report
  assert results["provenance"]["command"] == "python -m benchmarks.cost --toolbox --quick"


def test_toolbox_targets(quick_run):
  _, results = quick_run
  targets = {t["target"]: t for t in results["targets"]}
  assert "fSGHMC / SGD-M (cheap) ≤ 1.03" in targets
  assert "extra temp memory of fSGHMC over SGD-M ≤ 1.1 × parameter bytes" in targets
  for t in results["targets"]:
    assert t["met"] == (t["value"] <= t["limit"])
