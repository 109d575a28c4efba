"""Tests for fsgld_optax.flax.linen_train_step against a plain reference of one fSGLD step."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

import fsgld_optax
import fsgld_optax.flax
from fsgld_optax import _randomness

MOMENTUM = 0.9
EPS = 1e-5
LR = 0.05
BETA = 1e6
SIGMA = 0.3  # Large, so that a perturbation that went missing would change every number.


class Net(nn.Module):
  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    h = nn.Dense(4, name="dense")(x)
    h = nn.BatchNorm(not train, momentum=MOMENTUM, epsilon=EPS, name="norm")(h)
    return jnp.tanh(h).sum(axis=-1)


MODEL = Net()


def loss_fn(params: Any, batch_stats: Any, x: jax.Array, y: jax.Array) -> tuple[jax.Array, Any]:
  out, updates = MODEL.apply(
    {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
  )
  return jnp.mean((out - y) ** 2), updates["batch_stats"]


def reference_loss(p: Any, x: jax.Array, y: jax.Array) -> tuple[jax.Array, tuple]:
  """Net in training mode in plain jnp; returns the loss and the batch mean and variance."""
  h = x @ p["dense"]["kernel"] + p["dense"]["bias"][None]
  mean, var = jnp.mean(h, axis=0), jnp.var(h, axis=0)
  h = (h - mean[None]) / jnp.sqrt(var + EPS)[None] * p["norm"]["scale"][None]
  out = jnp.tanh(h + p["norm"]["bias"][None]).sum(axis=-1)
  return jnp.mean((out - y) ** 2), (mean, var)


def make_state(**tx_kwargs: Any) -> fsgld_optax.flax.TrainState:
  x = jnp.zeros((1, 3))
  variables = MODEL.init(jax.random.key(0), x, train=False)
  tx = fsgld_optax.fsgld(LR, tx_kwargs.pop("beta", BETA), sigma=SIGMA, key=7, **tx_kwargs)
  return fsgld_optax.flax.TrainState.create(
    apply_fn=MODEL.apply,
    params=variables["params"],
    batch_stats=variables["batch_stats"],
    tx=tx,
  )


def data(size: int = 8) -> tuple[jax.Array, jax.Array]:
  kx, ky = jax.random.split(jax.random.key(42))
  return jax.random.normal(kx, (size, 3)), jax.random.normal(ky, (size,))


def assert_tree_allclose(actual: Any, expected: Any) -> None:
  jax.tree.map(
    lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6), actual, expected
  )


@pytest.mark.parametrize(
  ("n", "split_batch", "group"), [(1, False, None), (3, False, None), (2, True, None), (4, True, 1)]
)
def test_step_matches_reference(n: int, split_batch: bool, group: int | None) -> None:
  state = make_state(weight_decay=1e-2)
  x, y = data()
  p0 = state.params
  fs = fsgld_optax.find_fsgld_state(state.opt_state)
  key = _randomness.perturbation_key(fs.rng_key, fs.count)
  keys = [jax.random.split(key, 1)[0]] if n == 1 else list(jax.random.split(key, n))

  # Plain reference: loss, gradient and batch statistics at each θ + ε_i, then the update.
  losses, grads, means, variances = [], [], [], []
  for i, k in enumerate(keys):
    eps = _randomness.standard_noise_like(k, p0, "gaussian")
    part = slice(i * 8 // n, (i + 1) * 8 // n) if split_batch else slice(None)
    (loss, (mean, var)), g = jax.value_and_grad(reference_loss, has_aux=True)(
      jax.tree.map(lambda p, e: p + SIGMA * e, p0, eps), x[part], y[part]
    )
    losses.append(loss)
    grads.append(g)
    means.append(mean)
    variances.append(var)
  mean_grad = jax.tree.map(lambda *g: sum(g) / n, *grads)
  xi = _randomness.standard_noise_like(
    _randomness.langevin_key(fs.rng_key, fs.count), p0, "gaussian"
  )
  expected_params = jax.tree.map(
    lambda p, g, z: p - LR * (g + 1e-2 * p) + np.sqrt(2 * LR / BETA) * z, p0, mean_grad, xi
  )
  old = state.batch_stats["norm"]

  step = jax.jit(
    fsgld_optax.flax.linen_train_step(
      loss_fn, n_perturbations=n, split_batch=split_batch, perturbation_batch_size=group
    )
  )
  new_state, loss = step(state, x, y)
  np.testing.assert_allclose(loss, np.mean(losses), rtol=1e-5)
  assert_tree_allclose(new_state.params, expected_params)
  stats = new_state.batch_stats["norm"]
  # Running statistics: the mean over perturbations of the n updated values ...
  np.testing.assert_allclose(
    stats["mean"],
    np.mean([MOMENTUM * old["mean"] + (1 - MOMENTUM) * m for m in means], axis=0),
    rtol=1e-5,
    atol=1e-6,
  )
  # ... which is one running-average update with the mean batch variance.
  np.testing.assert_allclose(
    stats["var"],
    MOMENTUM * old["var"] + (1 - MOMENTUM) * np.mean(variances, axis=0),
    rtol=1e-5,
    atol=1e-6,
  )
  assert int(new_state.step) == 1
  assert int(fsgld_optax.find_fsgld_state(new_state.opt_state).count) == 1


def test_has_aux_and_no_batch_stats() -> None:
  model = nn.Dense(2)
  x = jnp.ones((6, 3))
  state = fsgld_optax.flax.TrainState.create(
    apply_fn=model.apply,
    params=model.init(jax.random.key(0), x)["params"],
    tx=fsgld_optax.fsgld(LR, BETA, sigma=SIGMA, key=1),
  )
  assert state.batch_stats == {}

  def loss_with_aux(params: Any, batch_stats: Any, x: jax.Array) -> Any:
    out = model.apply({"params": params}, x)
    return jnp.sum(out), (batch_stats, {"out": out, "label": jnp.argmax(out, axis=-1)})

  step = fsgld_optax.flax.linen_train_step(loss_with_aux, n_perturbations=4, has_aux=True)
  new_state, (loss, aux) = step(state, x)
  # Floating aux is the mean over the perturbations (the loss is linear in it) ...
  np.testing.assert_allclose(loss, jnp.sum(aux["out"]), rtol=1e-5)
  # ... and integer aux comes from one of them.
  assert jnp.issubdtype(aux["label"].dtype, jnp.integer)
  assert new_state.batch_stats == {}


def test_axis_name_averages_batch_stats_over_devices() -> None:
  devices = 4
  mesh = Mesh(np.array(jax.devices()[:devices]), ("data",))
  state = make_state()
  x, y = data(4 * devices)
  step = fsgld_optax.flax.linen_train_step(loss_fn, n_perturbations=2, axis_name="data")
  replicated, sharded = PartitionSpec(), PartitionSpec("data")
  sharded_step = jax.jit(
    jax.shard_map(
      step,
      mesh=mesh,
      in_specs=(replicated, sharded, sharded),
      out_specs=(replicated, replicated),
    )
  )
  new_state, loss = sharded_step(state, x, y)

  # Reference: one device at a time. The update is affine in the gradient and ε and ξ are
  # the same on every device, so averaging per-device results equals the pmean'd step.
  single = jax.jit(fsgld_optax.flax.linen_train_step(loss_fn, n_perturbations=2))
  parts = [single(state, x[4 * d : 4 * d + 4], y[4 * d : 4 * d + 4]) for d in range(devices)]
  average = lambda *xs: sum(xs) / devices
  np.testing.assert_allclose(loss, average(*[part[1] for part in parts]), rtol=1e-5)
  assert_tree_allclose(new_state.params, jax.tree.map(average, *[p[0].params for p in parts]))
  assert_tree_allclose(
    new_state.batch_stats, jax.tree.map(average, *[p[0].batch_stats for p in parts])
  )
