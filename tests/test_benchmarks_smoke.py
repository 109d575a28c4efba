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

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fsgld_optax
from benchmarks import _report, noisy_labels, stationary, sweeps
from benchmarks.optimizers import make_optimizer

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
  # Its exact quantities are recomputed bit for bit by the check.
  check = stationary.main(["--check", "--quick", "--no-progress", "--out", str(tmp_path)])
  assert check["check"]["passed"]


@pytest.fixture(scope="module")
def noisy_quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
  out = tmp_path_factory.mktemp("noisy_labels")
  return out, run_quick(noisy_labels, "noisy_labels", out)


def test_noisy_labels_quick(noisy_quick: tuple[Path, dict[str, Any]]) -> None:
  out, r = noisy_quick
  config = noisy_labels.config_from_json(r["config"])
  assert config == noisy_labels.QUICK
  assert r["settings"]
  for setting in r["settings"]:
    assert set(setting["cells"]) == set(config.methods) == set(setting["summary"])
    for method, cells in setting["cells"].items():
      # The whole grid is reported, every cell with every paired seed.
      assert [c["hparams"] for c in cells] == config.cells(method)
      for cell in cells:
        assert [run["seed"] for run in cell["runs"]] == list(config.seeds)
        for run in cell["runs"]:
          assert len(run["test_acc"]) == len(run["train_loss_curve"]) == setting["epochs"]
          assert all(is_fraction(a) for a in run["test_acc"])
          assert all(math.isfinite(v) for v in run["train_loss_curve"])
          assert run["best_test_acc"] >= run["final_test_acc"]
          assert is_fraction(run["val_acc"]) and is_fraction(run["noisy_train_acc"])
      # The selection rule: the highest mean validation accuracy, the first on ties.
      means = [c["stats"]["val_acc"]["mean"] for c in cells]
      assert setting["selected"][method] == int(np.argmax(means))
      for k, lr in enumerate(config.lr_grid):
        chosen = cells[setting["per_lr"][method][k]]
        assert chosen["hparams"]["lr"] == lr
        at_lr = [c["stats"]["val_acc"]["mean"] for c in cells if c["hparams"]["lr"] == lr]
        assert chosen["stats"]["val_acc"]["mean"] == max(at_lr)
      for run in cells[setting["selected"][method]]["runs"]:
        for metric in ("hessian_trace", "hessian_trace_stderr", "lambda_max"):
          assert math.isfinite(run[metric]), (method, metric)
    assert {(c["method"], c["baseline"]) for c in setting["comparisons"]} == set(
      noisy_labels.COMPARISONS
    )
    for comp in setting["comparisons"]:
      a = setting["cells"][comp["method"]][setting["selected"][comp["method"]]]["runs"]
      b = setting["cells"][comp["baseline"]][setting["selected"][comp["baseline"]]]["runs"]
      diffs = [x["final_test_acc"] - y["final_test_acc"] for x, y in zip(a, b, strict=True)]
      sel = comp["selected"]
      assert sel["mean"] == pytest.approx(np.mean(diffs), abs=1e-12)
      assert sel["low"] <= sel["mean"] <= sel["high"]
      assert [d["lr"] for d in comp["per_lr"]] == list(config.lr_grid)
  markdown = (out / "noisy_labels.md").read_text()
  assert "The whole grid" in markdown and "Paired differences" in markdown
  assert r["provenance"]["source_hash"][:19] in markdown


def test_noisy_labels_check(noisy_quick: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
  out, r = noisy_quick
  # Same process, same machine: the rerun must reproduce the recorded runs bit for bit.
  result = noisy_labels.main(["--check", "--quick", "--no-progress", "--out", str(out)])
  assert result["check"]["passed"] and "bitwise" in result["check"]["report"]
  # A recorded loss moved by one part in a million is caught.
  setting = r["settings"][0]
  run = setting["cells"]["sgd"][setting["selected"]["sgd"]]["runs"][0]
  run["train_loss_curve"][0] *= 1 + 1e-6
  (tmp_path / "noisy_labels.json").write_text(json.dumps(r))
  with pytest.raises(SystemExit):
    noisy_labels.main(["--check", "--quick", "--no-progress", "--out", str(tmp_path)])


def test_noisy_labels_seeds_are_paired() -> None:
  config = noisy_labels.QUICK
  trainer = noisy_labels.Trainer(config)
  setting, steps = config.settings[0], 8
  sgd = trainer.initial_state(setting, "sgd", {"lr": 0.1}, 0, steps)
  fsghmc = trainer.initial_state(setting, "fsghmc", {"lr": 0.2, "beta": 1e5}, 0, steps)
  other = trainer.initial_state(setting, "sgd", {"lr": 0.1}, 1, steps)
  same = lambda a, b: jax.tree.all(jax.tree.map(np.array_equal, a, b))
  assert same(sgd.params, fsghmc.params)
  assert not same(sgd.params, other.params)
  # The data and the batch order come from the seed alone (the batches take no method).
  assert not np.array_equal(
    next(trainer.batches(setting, 0, 0))[1], next(trainer.batches(setting, 1, 0))[1]
  )
  noisy = [trainer.dataset(setting, seed).y_train for seed in (0, 1)]
  assert not np.array_equal(noisy[0], noisy[1])


def test_paired_difference_matches_the_t_interval() -> None:
  # d = (1, 2, 3): mean 2, sd 1, t_{0.975, 2} = 4.302652729911275 (tables).
  d = noisy_labels.paired_difference([1.0, 3.0, 6.0], [0.0, 1.0, 3.0])
  half = 4.302652729911275 / math.sqrt(3)
  assert d["mean"] == pytest.approx(2.0) and d["std"] == pytest.approx(1.0)
  assert (d["low"], d["high"]) == (pytest.approx(2 - half), pytest.approx(2 + half))
  assert d["sign"] == 0  # 2 - 2.48 < 0
  assert noisy_labels.paired_difference([2.0, 2.1], [1.0, 1.0])["sign"] == 1
  with pytest.raises(ValueError, match="two pairs"):
    noisy_labels.paired_difference([1.0], [0.0])
  with pytest.raises(ValueError, match="paired"):
    noisy_labels.paired_difference([1.0, 2.0], [0.0])


def quadratic_steps(optimizer: Any, steps: int = 3) -> np.ndarray:
  params = jnp.asarray([1.0, -2.0, 0.5])
  state = optimizer.tx.init(params)
  grad_fn = fsgld_optax.perturbed_value_and_grad(lambda p: 0.5 * jnp.sum(p**2))
  for _ in range(steps):
    if optimizer.gradient == "perturbed":
      _, grads = grad_fn(params, state)
    else:
      grads = params
    updates, state = optimizer.tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return np.asarray(params)


def test_momentum_optimizers_reduce_to_sgd_with_momentum() -> None:
  common = {"learning_rate": 0.1, "total_steps": 30, "key": 0, "weight_decay": 1e-2}
  reference = quadratic_steps(make_optimizer("sgd", momentum=0.9, **common))
  rwp = make_optimizer("rwp", sigma=0.0, momentum=0.9, **common)
  np.testing.assert_array_equal(quadratic_steps(rwp), reference)
  # fSGHMC without noise or perturbation, at a constant λ (the first third of the schedule),
  # is SGD with momentum, and its momentum defaults to 0.9.
  fsghmc = make_optimizer("fsghmc", beta=math.inf, sigma=0.0, **common)
  np.testing.assert_allclose(quadratic_steps(fsghmc), reference, rtol=1e-6)
  assert not np.allclose(quadratic_steps(make_optimizer("sgd", **common)), reference)
  with pytest.raises(ValueError, match="momentum"):
    make_optimizer("sgd", momentum=1.0, **common)


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
  check = sweeps.main(["--check", "--quick", "--no-progress", "--out", str(tmp_path)])
  assert check["check"]["passed"] and "bitwise" in check["check"]["report"]


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


CHECKED = {"noisy_labels": noisy_labels, "stationary": stationary, "sweeps": sweeps}


@pytest.mark.parametrize("name", sorted(CHECKED))
def test_committed_results_rerun(name: str) -> None:
  # The quick form of `python -m benchmarks.<name> --check` against the committed results:
  # bitwise on the machine that produced them, within the stated tolerances elsewhere. A file
  # whose sources changed since its run is stale (tests/test_provenance.py) and not checked.
  state = _report.status(_report.RESULTS_DIR / f"{name}.json")
  if state.state != "fresh":
    pytest.skip(f"{state.path} is {state.state}; regenerate with `{state.command}`")
  result = CHECKED[name].main(["--check", "--quick", "--no-progress"])
  assert result["check"]["passed"]
