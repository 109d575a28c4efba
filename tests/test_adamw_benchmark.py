"""Smoke and reduction tests of the AdamW noisy-label benchmark (``benchmarks.adamw``)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fsgld_optax
from benchmarks import _report, adamw, models
from benchmarks.train import init_state, make_loss

TINY = adamw.Config(
  epochs=1,
  methods=("adamw", "sam_adamw", "rwp_adamw_filter"),
  seeds=(0, 1),
  lrs=(("adamw", (1e-3,)), ("sam_adamw", (1e-3,)), ("rwp_adamw_filter", (1e-3,))),
  grids=(("sam_adamw", (0.05,)), ("rwp_adamw_filter", (0.01, 0.03))),
  cnn_features=(4,),
  max_steps_per_epoch=2,
  flatness_examples=16,
  hutchinson_samples=2,
)


@pytest.fixture(scope="module")
def tiny_run():
  return adamw.run(TINY, progress=False)


def test_grid_selection_and_paired_differences(tiny_run, tmp_path):
  cells = tiny_run["cells"]
  assert [len(cells[m]) for m in TINY.methods] == [1, 1, 2]
  for method, chosen in tiny_run["selected"].items():
    means = [c["stats"]["val_acc"]["mean"] for c in cells[method]]
    assert means[chosen] == max(means)  # selected by validation accuracy only
    for cell in cells[method]:
      assert [r["seed"] for r in cell["runs"]] == list(TINY.seeds)
      assert all(len(r["test_acc"]) == TINY.epochs for r in cell["runs"])
  pairs = {(d["method"], d["baseline"]) for d in tiny_run["comparisons"]}
  assert pairs == {(a, b) for a, b in adamw.COMPARISONS if a in TINY.methods and b in TINY.methods}
  for d in tiny_run["comparisons"]:
    assert d["n"] == 2 and d["low"] <= d["mean"] <= d["high"] and 0 <= d["wins"] <= 2
  paths = _report.write(tiny_run, tmp_path, "adamw", adamw.markdown, adamw.plot)
  assert json.loads(paths[0].read_text())["provenance"]["module"] == "benchmarks.adamw"
  report = paths[1].read_text()
  for method in TINY.methods:
    assert f"| {adamw.LABELS[method]} |" in report
  assert "γ=0.03" in report  # the filter-wise scale is reported as the relative γ
  # --check reruns the first epoch of seed 0 of every selected cell, bit for bit here.
  check = adamw.main(["--check", "--no-progress", "--out", str(tmp_path)])
  report = check["check"]["report"]
  assert check["check"]["passed"] and "bitwise" in report
  assert f"{2 * len(TINY.methods)} quantities" in report  # loss and accuracy of each method


@pytest.mark.parametrize("method", ["rwp_adamw", "rwp_adamw_filter"])
def test_rwp_adamw_at_sigma_zero_is_adamw(method):
  """With σ = 0 the perturbed gradient is the plain one, so RWP-AdamW steps like AdamW."""
  model = models.CNN1D(10, features=(4,))
  loss_fn = make_loss(model.apply, True)
  x = jax.random.normal(jax.random.key(1), (8, 40, 1))
  y = jnp.arange(8) % 10
  states = {}
  for name, hparams in (("adamw", {"lr": 1e-2}), (method, {"lr": 1e-2, "sigma": 0.0})):
    opt = adamw.build_optimizer(name, hparams, total_steps=10, key=0)
    step = jax.jit(adamw.make_step(opt, loss_fn, adamw.METHODS[name].scale))
    state = init_state(model, opt, np.zeros((1, 40, 1), np.float32), jax.random.key(0))
    for _ in range(3):
      state, _ = step(state, x, y)
    states[name] = state
  for a, b in zip(
    jax.tree.leaves(states["adamw"].params), jax.tree.leaves(states[method].params), strict=True
  ):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_filter_scale_perturbs_relative_to_the_filter_norm():
  """The benchmark's filter-wise RWP state perturbs filter f by γ‖w_f‖ z (same draws z)."""
  opt = adamw.build_optimizer("rwp_adamw_filter", {"lr": 1e-3, "sigma": 0.5}, 10, key=3)
  params = {"w": jnp.array([[1.0, 10.0], [0.0, 0.0]])}  # filter norms 1 and 10
  state = opt.tx.init(params)

  def loss_fn(p, aux):
    return jnp.sum(p["w"] ** 3) / 3, aux  # gradient w², so it reveals θ + ε

  g_filter = fsgld_optax.perturbed_value_and_grad(
    loss_fn, has_aux=True, aux_reduction="mean", perturbation_scale="filter"
  )(params, state, jnp.zeros(()))[1]["w"]
  g_iso = fsgld_optax.perturbed_value_and_grad(loss_fn, has_aux=True, aux_reduction="mean")(
    params, state, jnp.zeros(())
  )[1]["w"]
  # Same draws z: ε_iso = 0.5 z, ε_filter = 0.5 ‖w_f‖ z; the second row has w = 0, so
  # g = ε² there and the ratio of filter to isotropic is ‖w_f‖² per column.
  ratio = g_filter[1] / g_iso[1]
  np.testing.assert_allclose(ratio, jnp.array([1.0, 100.0]), rtol=1e-5)
