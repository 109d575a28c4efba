"""Smoke tests of the reproduction benchmarks: each ``--quick`` run writes sane results.

Every benchmark runs in process through its ``main(argv)`` with ``--quick`` into a temporary
folder (never ``benchmarks/results/``); the tests check that the JSON, Markdown and PNG files
are written and that the numbers are finite and in range. The stationary-law run is also
checked for what it is meant to show, with margins far outside its Monte-Carlo error.
"""

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import noisy_labels, stationary, sweeps

pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_quick(module: Any, name: str, out: Path) -> dict[str, Any]:
  module.main(["--quick", "--no-progress", "--out", str(out)])
  for suffix in ("json", "md", "png"):
    assert (out / f"{name}.{suffix}").stat().st_size > 0, suffix
  assert (out / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
  written = json.loads((out / f"{name}.json").read_text())
  assert written["benchmark"] == name
  assert written["quick"] is True
  assert (out / f"{name}.md").read_text().startswith("## ")
  return written


def is_fraction(x: Any) -> bool:
  return isinstance(x, float) and math.isfinite(x) and 0.0 <= x <= 1.0


def test_stationary_quick(tmp_path: Path) -> None:
  r = run_quick(stationary, "stationary", tmp_path)
  sgld, fsgld = r["main"]["sgld"], r["main"]["fsgld"]
  for row in (sgld, fsgld):
    for key in ("tv_to_smoothed_law", "tv_to_unsmoothed_law", "flat_mass_empirical"):
      assert is_fraction(row[key]), key
    assert all(is_fraction(v) for v in row["flat_mass_over_time"])
    assert 0 < row["tv_noise_floor"]["mean"] <= row["tv_noise_floor"]["q95"] < 1
  # Equal-depth wells: exp(-βU) already favours the flat basin, smoothing favours it more,
  # and monotonically in σ (exact computations, no sampling error).
  exact = [row["flat_mass_exact"] for row in r["sigma_sweep"]]
  assert 0.5 < exact[0] < fsgld["flat_mass_exact"] < 1
  assert exact == sorted(exact)
  # The fSGLD chains are far closer to exp(-βU_σ) than to exp(-βU): in the quick run the two
  # distances are about 0.05 and 0.20, while the TV noise floor of 4,000 draws is 0.04.
  assert fsgld["tv_to_smoothed_law"] < 0.5 * fsgld["tv_to_unsmoothed_law"]
  assert fsgld["tv_to_unsmoothed_law"] > 3 * fsgld["tv_noise_floor"]["q95"]
  # The discrete chain's exact invariant law is close to the continuous one, and its bias
  # grows with the step size.
  for sigma in (0.0, fsgld["sigma"]):
    rows = [d for d in r["discretisation"] if d["sigma"] == sigma]
    assert [d["learning_rate"] for d in rows] == sorted(d["learning_rate"] for d in rows)
    assert 0 < rows[0]["tv_discrete_vs_exact"] < rows[1]["tv_discrete_vs_exact"] < 0.05
  assert r["quadrature_max_abs_error"] < 1e-8


def test_noisy_labels_quick(tmp_path: Path) -> None:
  r = run_quick(noisy_labels, "noisy_labels", tmp_path)
  config = r["config"]
  assert r["settings"]
  for setting in r["settings"]:
    assert set(setting["summary"]) == set(config["methods"])
    for method, summary in setting["summary"].items():
      param, values = r["grids"][method]
      assert summary["hparams"][param] in values
      for metric in ("final_test_acc", "best_test_acc", "noisy_train_acc"):
        assert is_fraction(summary[metric]["mean"]), (method, metric)
        assert summary[metric]["std"] >= 0
      for run in setting["runs"][method]:
        assert all(is_fraction(a) for a in run["test_acc"])
        assert run["best_test_acc"] >= run["final_test_acc"]
        for metric in ("hessian_trace", "hessian_trace_stderr", "lambda_max"):
          assert math.isfinite(run[metric]), (method, metric)
        assert run["hessian_trace_stderr"] >= 0
    assert len(setting["search"]) == noisy_labels.search_runs(noisy_labels.QUICK)
    assert all(is_fraction(s["val_acc"]) for s in setting["search"])


def test_sweeps_quick(tmp_path: Path) -> None:
  r = run_quick(sweeps, "sweeps", tmp_path)
  config = r["config"]
  assert [row["sigma"] for row in r["sigma_sweep"]] == config["sigmas"]
  for row in r["sigma_sweep"]:
    # RWP (β = ∞) at every σ > 0; at σ = 0 it would be SGD, the reference row.
    assert (row["rwp"] is None) == (row["sigma"] == 0)
    if row["rwp"] is not None:
      assert is_fraction(row["rwp"]["final_test_acc"]["mean"])
  modes = {(row["n"], row["mode"]) for row in r["n_sweep"]}
  assert (1, "both") in modes
  assert {(n, m) for n in config["n_values"][1:] for m in ("plain", "split_batch")} <= modes
  for row in [r["sgd"], *r["sigma_sweep"], *r["n_sweep"]]:
    for metric in ("final_test_acc", "best_test_acc", "noisy_train_acc"):
      assert is_fraction(row[metric]["mean"]), metric
  for row in r["n_sweep"]:
    expected = 1 if row["mode"] != "plain" else row["n"]
    assert row["gradient_passes_per_step"] == expected


def test_diagnostics_cost_quick(tmp_path: Path) -> None:
  # Run as ``python -m``, the way users run it: the module is then ``__main__``, and the
  # output files must still be named after it.
  command = [sys.executable, "-m", "benchmarks.diagnostics_cost", "--quick", "--no-progress"]
  result = subprocess.run(
    [*command, "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, check=False
  )
  assert result.returncode == 0, result.stderr
  assert sorted(p.name for p in tmp_path.iterdir()) == [
    "diagnostics_cost.json",
    "diagnostics_cost.md",
  ]
  assert (tmp_path / "diagnostics_cost.md").read_text().startswith("# Cost of the curvature")
  r = json.loads((tmp_path / "diagnostics_cost.json").read_text())
  assert r["quick"] is True
  config, rows = r["config"], {row["name"]: row for row in r["results"]}
  assert rows["gradient"]["ratio_to_gradient"] == 1.0
  for row in rows.values():
    assert len(row["times_s"]) == config["repeats"]
    assert min(row["times_s"]) == row["min_s"] <= row["median_s"]
    assert math.isfinite(row["ratio_to_gradient"]) and row["ratio_to_gradient"] > 0
  probes = config["hutchinson_probes"]
  assert rows[f"Hutchinson trace, {probes} probes"]["hessian_vector_products"] == probes
  estimates = r["estimates"]
  assert 0 < estimates["trace_stderr"] < abs(estimates["trace"])
  top = estimates["top_eigenvalues"]
  assert len(top) == config["top_k"] and top == sorted(top, reverse=True)
  # Lanczos converges from the top: the largest Ritz pair is accurate.
  assert estimates["top_residual_norms"][0] < 1e-3 * abs(top[0])
