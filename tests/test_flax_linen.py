"""Tests for fsgld_optax.flax.linen_train_step against a plain reference of one fSGLD step."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _options import BAD_WRAPPER_OPTIONS
from flax.training import dynamic_scale as dynamic_scale_lib
from flax.training import train_state
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


# --- Flax's own TrainState, batch_argnums, aux_reduction. ----------------------------------

DENSE = nn.Dense(2)


def plain_loss(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
  """A loss without batch_stats, as for a model without BatchNorm."""
  return jnp.mean((DENSE.apply({"params": params}, x) - y[:, None]) ** 2)


def perturbed_grads(params: Any, opt_state: Any, n: int, loss: Any, *batches: Any) -> Any:
  """Reference: loss and gradient at θ + ε_i (batch ``batches[i]``), averaged over i."""
  fs = fsgld_optax.find_fsgld_state(opt_state)
  key = _randomness.perturbation_key(fs.rng_key, fs.count)
  keys = [jax.random.split(key, 1)[0]] if n == 1 else list(jax.random.split(key, n))
  out = [
    jax.value_and_grad(loss, has_aux=True)(
      jax.tree.map(
        lambda p, e: p + fs.sigma * e,
        params,
        _randomness.standard_noise_like(k, params, "gaussian"),
      ),
      *batch,
    )
    for k, batch in zip(keys, batches, strict=True)
  ]
  return out, jax.tree.map(lambda *g: sum(g) / n, *[g for _, g in out])


@pytest.mark.parametrize("chained", [False, True])
def test_flax_train_state_without_batch_stats(chained: bool) -> None:
  # Regression: Flax's own TrainState failed with AttributeError: no attribute 'batch_stats'.
  x, y = data()
  tx = (
    optax.chain(fsgld_optax.rwp(SIGMA, key=2), optax.adamw(1e-2))
    if chained
    else fsgld_optax.fsgld(LR, BETA, sigma=SIGMA, key=2)
  )
  state = train_state.TrainState.create(
    apply_fn=DENSE.apply, params=DENSE.init(jax.random.key(0), x)["params"], tx=tx
  )
  n = 2
  with_aux = lambda p, x, y: (plain_loss(p, x, y), None)
  out, mean_grad = perturbed_grads(state.params, state.opt_state, n, with_aux, (x, y), (x, y))
  new_state, loss = jax.jit(fsgld_optax.flax.linen_train_step(plain_loss, n_perturbations=n))(
    state, x, y
  )
  np.testing.assert_allclose(loss, np.mean([v for (v, _), _ in out]), rtol=1e-5)
  assert_tree_allclose(new_state.params, state.apply_gradients(grads=mean_grad).params)
  assert type(new_state) is train_state.TrainState and int(new_state.step) == 1


def test_a_loss_of_the_other_kind_gets_a_clear_error() -> None:
  x, y = data()
  plain = train_state.TrainState.create(
    apply_fn=DENSE.apply,
    params=DENSE.init(jax.random.key(0), x)["params"],
    tx=fsgld_optax.fsgld(LR, BETA, key=2),
  )
  # A batch_stats-style loss with a state that has no batch_stats: called without them.
  with pytest.raises(TypeError) as info:
    fsgld_optax.flax.linen_train_step(loss_fn)(plain, x, y)
  assert "no batch_stats field" in "".join(getattr(info.value, "__notes__", []))
  # A plain loss with a state that has batch_stats: called with them.
  with pytest.raises(TypeError) as info:
    fsgld_optax.flax.linen_train_step(plain_loss)(make_state(), x, y)
  assert "has a batch_stats field" in "".join(getattr(info.value, "__notes__", []))
  # A BatchNorm model with a mutable apply but no batch_stats to store them: a pair, no aux.
  bn_loss = lambda p, x, y: MODEL.apply({"params": p}, x, train=True, mutable=["batch_stats"])
  bn_plain = train_state.TrainState.create(
    apply_fn=MODEL.apply, params=make_state().params, tx=fsgld_optax.fsgld(LR, BETA, key=2)
  )
  with pytest.raises(ValueError, match=r"use fsgld_optax\.flax\.TrainState"):
    fsgld_optax.flax.linen_train_step(bn_loss)(bn_plain, x, y)
  with pytest.raises(TypeError, match="state must be"):
    fsgld_optax.flax.linen_train_step(plain_loss)({"params": plain.params}, x, y)


def test_dynamic_scale_is_refused_not_ignored() -> None:
  # Flax's ImageNet example keeps a DynamicScale in its TrainState for float16; the step
  # does not scale the loss, so it says so rather than training without the scaling.
  class ScaledState(train_state.TrainState):
    dynamic_scale: Any = None

  x, y = data()
  state = ScaledState.create(
    apply_fn=DENSE.apply,
    params=DENSE.init(jax.random.key(0), x)["params"],
    tx=fsgld_optax.fsgld(LR, BETA, key=2),
    dynamic_scale=dynamic_scale_lib.DynamicScale(),
  )
  with pytest.raises(ValueError, match="dynamic_scale"):
    fsgld_optax.flax.linen_train_step(plain_loss)(state, x, y)
  new_state, _ = fsgld_optax.flax.linen_train_step(plain_loss)(
    state.replace(dynamic_scale=None), x, y
  )
  assert int(new_state.step) == 1


def weighted_bn_loss(params: Any, batch_stats: Any, x: jax.Array, y: jax.Array, w: jax.Array):
  out, updates = MODEL.apply(
    {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
  )
  return w * jnp.mean((out - y) ** 2), (updates["batch_stats"], {"out": out, "w": w})


def test_batch_argnums_and_aux_reduction_with_batch_stats() -> None:
  n = 2
  state = make_state()
  x, y = data()
  w = jnp.float32(3.0)
  w_vec = jnp.full((2,), w)  # A batched-looking weight that must not be split.

  def reference(p: Any, x: jax.Array, y: jax.Array) -> Any:
    h = x @ p["dense"]["kernel"] + p["dense"]["bias"][None]
    mean, var = jnp.mean(h, axis=0), jnp.var(h, axis=0)
    h = (h - mean[None]) / jnp.sqrt(var + EPS)[None] * p["norm"]["scale"][None]
    out = jnp.tanh(h + p["norm"]["bias"][None]).sum(axis=-1)
    return w * jnp.mean((out - y) ** 2), (mean, out)

  out, mean_grad = perturbed_grads(
    state.params, state.opt_state, n, reference, (x[:4], y[:4]), (x[4:], y[4:])
  )
  step = fsgld_optax.flax.linen_train_step(
    lambda p, b, x, y, w: weighted_bn_loss(p, b, x, y, w[0]),
    n_perturbations=n,
    has_aux=True,
    split_batch=True,
    batch_argnums=(0, 1),
    aux_reduction={"out": "concat", "w": "mean"},
  )
  new_state, (loss, aux) = jax.jit(step)(state, x, y, w_vec)
  np.testing.assert_allclose(loss, np.mean([v for (v, _), _ in out]), rtol=1e-5)
  assert_tree_allclose(new_state.params, state.apply_gradients(grads=mean_grad).params)
  # Per-example outputs in batch order; the weight (a scalar aux) averaged.
  np.testing.assert_allclose(
    aux["out"], np.concatenate([o for (_, (_, o)), _ in out]), rtol=1e-5, atol=1e-6
  )
  assert float(aux["w"]) == 3.0
  # The statistics are averaged over the slices whatever aux_reduction says.
  old = state.batch_stats["norm"]
  np.testing.assert_allclose(
    new_state.batch_stats["norm"]["mean"],
    MOMENTUM * old["mean"] + (1 - MOMENTUM) * np.mean([m for (_, (m, _)), _ in out], axis=0),
    rtol=1e-5,
    atol=1e-6,
  )


def test_split_batch_errors() -> None:
  state = make_state()
  x, y = data()
  w = jnp.ones(2)
  step = lambda **kw: fsgld_optax.flax.linen_train_step(
    lambda p, b, x, y, w: weighted_bn_loss(p, b, x, y, w[0]),
    n_perturbations=2,
    has_aux=True,
    split_batch=True,
    **kw,
  )
  # Default aux_reduction: per-example aux under split_batch must be chosen, not averaged.
  with pytest.raises(ValueError, match="aux_reduction"):
    step(batch_argnums=(0, 1))(state, x, y, w)
  with pytest.raises(ValueError, match="batch_argnums"):
    step(batch_argnums=3, aux_reduction="concat")(state, x, y, w)
  with pytest.raises(ValueError, match=r"aux_reduction=\('concat',\) is not a pytree prefix"):
    step(batch_argnums=(0, 1), aux_reduction=("concat",))(state, x, y, w)
  # A dropout key passed positionally cannot be split: named by its position after state.
  keyed = lambda p, b, x, y, key: loss_fn(p, b, x, y)
  with pytest.raises(ValueError, match=r"argument \(after state\) 2 .* \(\)"):
    fsgld_optax.flax.linen_train_step(keyed, n_perturbations=2, split_batch=True)(
      state, x, y, jax.random.key(0)
    )
  # A loss that closes over its batch, as in Flax's Linen examples: nothing to split.
  closed = lambda p, b: loss_fn(p, b, x, y)
  with pytest.raises(ValueError, match="split_batch"):
    fsgld_optax.flax.linen_train_step(closed, n_perturbations=2, split_batch=True)(state)


@pytest.mark.parametrize(("name", "value"), BAD_WRAPPER_OPTIONS)
def test_options_are_checked_when_the_step_is_built(name: str, value: Any) -> None:
  with pytest.raises((TypeError, ValueError), match=name):
    fsgld_optax.flax.linen_train_step(loss_fn, **{name: value})
