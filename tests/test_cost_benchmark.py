"""Smoke test of the cost benchmark: ``python -m benchmarks.cost --quick`` on tiny shapes."""

import json

import pytest

from benchmarks import cost


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("cost")
  results = cost.main(["--quick", "--no-progress", "--out", str(out)])
  return out, results


def test_writes_json_markdown_and_png(quick_run):
  out, results = quick_run
  assert json.loads((out / "cost.json").read_text()) == json.loads(json.dumps(results))
  assert (out / "cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  report = (out / "cost.md").read_text()
  for workload in results["workloads"]:
    assert f"## {workload['name']}" in report
    for row in workload["rows"]:
      assert f"| {row['name']} |" in report
  assert "## Optimizer only" in report and "## Targets" in report


def test_every_method_is_timed_against_sgd(quick_run):
  _, results = quick_run
  (workload,) = results["workloads"]
  names = [row["name"] for row in workload["rows"]]
  assert names == [m.name for m in cost.QUICK.workloads[0].methods]
  for row in workload["rows"]:
    assert len(row["times_s"]) == workload["repeats"]
    assert row["median_s"] > 0 and row["compile_s"] > 0
    assert row["memory"]["temp"] is not None and row["memory"]["peak"] > 0
  sgd = next(row for row in workload["rows"] if row["name"] == "SGD")
  assert sgd["ratio_to_sgd"] == 1.0 and sgd["extra_temp_over_param_bytes"] == 0.0
  micro = results["micro"]
  assert micro["num_params"] == sum(
    a * b * c * d for a, b, c, d in [(64, 256, 1, 1), (3, 3, 16, 32), (100, 1, 1, 1)]
  )
  assert micro["rows"][0]["ratio_to_sgd"] == 1.0


def test_targets_name_their_workload_and_limit(quick_run):
  _, results = quick_run
  targets = {t["target"] for t in results["targets"]}
  assert "fSGLD(n=1) / SGD ≤ 1.03" in targets
  assert "extra temp memory of fSGLD(n=1) ≤ 1.1 × parameter bytes" in targets
  for t in results["targets"]:
    assert t["met"] == (t["value"] <= t["limit"])
