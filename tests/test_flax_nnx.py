"""Tests for fsgld_optax.flax.nnx_value_and_grad against a plain reference of one fSGLD step."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import fsgld_optax
import fsgld_optax.flax
from fsgld_optax import _randomness

MOMENTUM = 0.9
EPS = 1e-5
LR = 0.05
BETA = 1e6
SIGMA = 0.3  # Large, so that a perturbation that went missing would change every number.


class Net(nnx.Module):
  """Linear -> BatchNorm -> tanh -> sum, with an extra float variable that is not a Param."""

  def __init__(self, rngs: nnx.Rngs) -> None:
    self.dense = nnx.Linear(3, 4, rngs=rngs)
    self.norm = nnx.BatchNorm(4, momentum=MOMENTUM, epsilon=EPS, rngs=rngs)
    self.offset = nnx.Variable(jnp.full((4,), 0.5))

  def __call__(self, x: jax.Array) -> jax.Array:
    return jnp.tanh(self.norm(self.dense(x)) + self.offset[...][None]).sum(axis=-1)


def loss_fn(model: Net, x: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.mean((model(x) - y) ** 2)


def reference_forward(
  p: dict[str, Any], x: jax.Array, mean: jax.Array, var: jax.Array, train: bool
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The network of Net in plain jnp; returns outputs and the batch mean and variance."""
  h = x @ p["dense"]["kernel"] + p["dense"]["bias"][None]
  if train:
    mean, var = jnp.mean(h, axis=0), jnp.var(h, axis=0)
  h = (h - mean[None]) / jnp.sqrt(var + EPS)[None] * p["norm"]["scale"][None] + p["norm"]["bias"][
    None
  ]
  return jnp.tanh(h + 0.5).sum(axis=-1), mean, var


def perturbations(params: nnx.State, state: fsgld_optax.FSGLDState, n: int) -> list[dict]:
  """The n perturbations ε_i of the step in ``state``, drawn as the wrapper draws them."""
  key = _randomness.perturbation_key(state.rng_key, state.count)
  keys = [jax.random.split(key, 1)[0]] if n == 1 else list(jax.random.split(key, n))
  return [
    jax.tree.map(
      lambda e: state.sigma * e,
      nnx.to_pure_dict(_randomness.standard_noise_like(k, params, "gaussian")),
    )
    for k in keys
  ]


def data() -> tuple[jax.Array, jax.Array]:
  kx, ky = jax.random.split(jax.random.key(42))
  return jax.random.normal(kx, (8, 3)), jax.random.normal(ky, (8,))


def make(tx: optax.GradientTransformation | None = None) -> tuple[Net, nnx.Optimizer]:
  model = Net(nnx.Rngs(0))
  if tx is None:
    tx = fsgld_optax.fsgld(LR, BETA, sigma=SIGMA, key=7)
  return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def assert_tree_allclose(actual: Any, expected: Any, rtol: float = 1e-5) -> None:
  jax.tree.map(
    lambda a, e: np.testing.assert_allclose(a, e, rtol=rtol, atol=1e-6), actual, expected
  )


@pytest.mark.parametrize(
  ("n", "split_batch", "group"), [(1, False, None), (3, False, None), (2, True, None), (4, True, 1)]
)
def test_step_matches_reference(n: int, split_batch: bool, group: int | None) -> None:
  model, optimizer = make()
  x, y = data()
  params = nnx.split(model, nnx.Param, ...)[1]
  p0 = nnx.to_pure_dict(params)
  state = fsgld_optax.find_fsgld_state(nnx.as_pure(optimizer.opt_state))
  old_mean, old_var = model.norm.mean[...], model.norm.var[...]

  # Plain reference: loss, gradient and batch statistics at each θ + ε_i, then the update.
  losses, grads, means, variances = [], [], [], []
  for i, eps in enumerate(perturbations(params, state, n)):
    xi, yi = (
      (x[i * 8 // n : (i + 1) * 8 // n], y[i * 8 // n : (i + 1) * 8 // n])
      if split_batch
      else (x, y)
    )

    def ref_loss(p: dict, xi: jax.Array = xi, yi: jax.Array = yi) -> Any:
      out, mean, var = reference_forward(p, xi, old_mean, old_var, train=True)
      return jnp.mean((out - yi) ** 2), (mean, var)

    (loss, (mean, var)), g = jax.value_and_grad(ref_loss, has_aux=True)(
      jax.tree.map(jnp.add, p0, eps)
    )
    losses.append(loss)
    grads.append(g)
    means.append(mean)
    variances.append(var)
  mean_grad = jax.tree.map(lambda *g: sum(g) / n, *grads)
  xi_noise = nnx.to_pure_dict(
    _randomness.standard_noise_like(
      _randomness.langevin_key(state.rng_key, state.count), params, "gaussian"
    )
  )
  expected_params = jax.tree.map(
    lambda p, g, z: p - LR * g + np.sqrt(2 * LR / BETA) * z, p0, mean_grad, xi_noise
  )

  grad_fn = fsgld_optax.flax.nnx_value_and_grad(
    loss_fn, n_perturbations=n, split_batch=split_batch, perturbation_batch_size=group
  )

  @nnx.jit
  def train_step(model: Net, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
    loss, grads = grad_fn(model, optimizer, x, y)
    optimizer.update(model, grads)
    return loss

  loss = train_step(model, optimizer, x, y)
  np.testing.assert_allclose(loss, np.mean(losses), rtol=1e-5)
  assert_tree_allclose(nnx.to_pure_dict(nnx.state(model, nnx.Param)), expected_params)
  # Running statistics: the mean over perturbations of the n updated values ...
  np.testing.assert_allclose(
    model.norm.mean[...],
    np.mean([MOMENTUM * old_mean + (1 - MOMENTUM) * m for m in means], 0),
    rtol=1e-5,
    atol=1e-6,
  )
  # ... which is one running-average update with the mean batch variance.
  np.testing.assert_allclose(
    model.norm.var[...],
    MOMENTUM * old_var + (1 - MOMENTUM) * np.mean(variances, 0),
    rtol=1e-5,
    atol=1e-6,
  )
  np.testing.assert_array_equal(model.offset[...], 0.5)  # Not a Param: neither moved nor perturbed.
  assert int(nnx.as_pure(optimizer.opt_state).count) == 1


def test_only_params_are_perturbed_in_eval_mode() -> None:
  # In eval mode BatchNorm reads its running statistics: perturbing them (or the float
  # `offset` variable) would change the loss and the gradient.
  model, optimizer = make()
  model.norm.mean[...] = jnp.array([0.1, -0.2, 0.3, 0.0])
  model.norm.var[...] = jnp.array([0.5, 2.0, 1.0, 1.5])
  model.eval()
  x, y = data()
  params = nnx.split(model, nnx.Param, ...)[1]
  p0 = nnx.to_pure_dict(params)
  state = fsgld_optax.find_fsgld_state(nnx.as_pure(optimizer.opt_state))
  mean, var = model.norm.mean[...], model.norm.var[...]

  def ref_loss(p: dict) -> jax.Array:
    return jnp.mean((reference_forward(p, x, mean, var, train=False)[0] - y) ** 2)

  n = 2
  ref = [
    jax.value_and_grad(ref_loss)(jax.tree.map(jnp.add, p0, e))
    for e in perturbations(params, state, n)
  ]
  grad_fn = fsgld_optax.flax.nnx_value_and_grad(loss_fn, n_perturbations=n)
  loss, grads = grad_fn(model, optimizer, x, y)
  np.testing.assert_allclose(loss, np.mean([v for v, _ in ref]), rtol=1e-5)
  assert_tree_allclose(
    nnx.to_pure_dict(grads), jax.tree.map(lambda a, b: (a + b) / 2, ref[0][1], ref[1][1])
  )
  np.testing.assert_array_equal(model.norm.mean[...], mean)
  np.testing.assert_array_equal(model.norm.var[...], var)


class DropoutNet(nnx.Module):
  def __init__(self, rngs: nnx.Rngs) -> None:
    self.dense = nnx.Linear(3, 2, rngs=rngs)
    self.dropout = nnx.Dropout(0.5, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.dropout(self.dense(x))


def test_rng_counters_and_aux() -> None:
  model = DropoutNet(nnx.Rngs(0, dropout=1))
  optimizer = nnx.Optimizer(model, fsgld_optax.fsgld(LR, BETA, key=3), wrt=nnx.Param)
  count = int(model.dropout.rngs.count[...])

  def loss_with_aux(model: DropoutNet, x: jax.Array) -> tuple[jax.Array, dict]:
    out = model(x)
    return jnp.sum(out), {"out": out, "argmax": jnp.argmax(out, axis=-1)}

  grad_fn = fsgld_optax.flax.nnx_value_and_grad(loss_with_aux, n_perturbations=4, has_aux=True)
  (loss, aux), _ = grad_fn(model, optimizer.opt_state, jnp.ones((5, 3)))
  # Counters advance as for one forward pass (the first perturbation's value is kept) ...
  assert int(model.dropout.rngs.count[...]) == count + 1
  # ... floating aux is averaged over the perturbations, integer aux comes from the first.
  np.testing.assert_allclose(loss, jnp.sum(aux["out"]), rtol=1e-5)
  assert aux["out"].shape == (5, 2)
  assert aux["argmax"].dtype == jnp.argmax(jnp.ones(2)).dtype


def test_errors() -> None:
  model, optimizer = make(optax.sgd(0.1))
  grad_fn = fsgld_optax.flax.nnx_value_and_grad(loss_fn)
  with pytest.raises(ValueError, match="No FSGLDState"):
    grad_fn(model, optimizer, *data())
  with pytest.raises(ValueError, match="n_perturbations"):
    fsgld_optax.flax.nnx_value_and_grad(loss_fn, n_perturbations=0)
