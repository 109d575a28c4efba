"""Tests for fsgld_optax.flax.nnx_value_and_grad against a plain reference of one fSGLD step."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _options import BAD_WRAPPER_OPTIONS
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
  assert int(fsgld_optax.find_fsgld_state(nnx.as_pure(optimizer.opt_state)).count) == 1


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


# --- Graph-node arguments (nnx.Rngs passed to the loss, as in Flax's examples). -------------


class CallDropoutNet(nnx.Module):
  """Linear -> Dropout, with the Rngs passed at call time as in Flax's MNIST example."""

  def __init__(self, rngs: nnx.Rngs) -> None:
    self.dense = nnx.Linear(3, 4, rngs=rngs)
    self.dropout = nnx.Dropout(0.5)

  def __call__(self, x: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
    return self.dropout(self.dense(x), rngs=rngs).sum(axis=-1)


def rngs_loss(model: CallDropoutNet, x: jax.Array, y: jax.Array, rngs: nnx.Rngs) -> Any:
  out = model(x, rngs)
  return jnp.mean((out - y) ** 2), out


def perturbed_copy(model: nnx.Module, eps: dict) -> nnx.Module:
  """A copy of ``model`` with its parameters moved by ``eps`` (a pure dict like the Params)."""
  copy = nnx.clone(model)
  params = nnx.state(copy, nnx.Param)
  moved = jax.tree.map(jnp.add, nnx.to_pure_dict(params), eps)
  nnx.replace_by_pure_dict(params, moved)
  nnx.update(copy, params)
  return copy


def folded_copy(rngs: nnx.Rngs, index: int) -> nnx.Rngs:
  """A copy of ``rngs`` whose stream keys have ``index`` folded in (none for index 0)."""
  copy = nnx.clone(rngs)
  if index:
    for _, node in nnx.iter_graph(copy):
      if isinstance(node, nnx.RngStream):
        node.key[...] = jax.random.fold_in(node.key[...], index)
  return copy


def test_rngs_argument_gives_nnx_value_and_grad_result_at_sigma_zero() -> None:
  # Regression: an nnx.Rngs argument failed with "Cannot mutate RngCount from a different
  # trace level". With σ = 0 and n = 1 the result, masks included, is nnx.value_and_grad's.
  model = CallDropoutNet(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, fsgld_optax.fsgld(LR, BETA, sigma=0.0, key=3), wrt=nnx.Param)
  x, y = data()
  rngs = nnx.Rngs(dropout=5)
  ref_model, ref_rngs = nnx.clone(model), nnx.clone(rngs)
  (ref_loss, ref_out), ref_grads = nnx.value_and_grad(rngs_loss, has_aux=True)(
    ref_model, x, y, ref_rngs
  )
  grad_fn = fsgld_optax.flax.nnx_value_and_grad(rngs_loss, has_aux=True)
  (loss, out), grads = nnx.jit(grad_fn)(model, optimizer, x, y, rngs)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  np.testing.assert_allclose(out, ref_out, rtol=1e-6)
  assert_tree_allclose(nnx.to_pure_dict(grads), nnx.to_pure_dict(ref_grads), rtol=1e-6)
  assert int(rngs.dropout.count[...]) == int(ref_rngs.dropout.count[...]) == 1
  assert np.any(np.asarray(out) == 0.0) or np.any(np.asarray(ref_out) != 0.0)


@pytest.mark.parametrize("group", [None, 1])
def test_split_batch_gives_each_slice_its_own_dropout_stream(group: int | None) -> None:
  n = 2
  model = CallDropoutNet(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, fsgld_optax.fsgld(LR, BETA, sigma=SIGMA, key=3), wrt=nnx.Param)
  x, y = data()
  rngs = nnx.Rngs(dropout=5)
  key_before = jax.random.key_data(rngs.dropout.key[...])
  params = nnx.split(model, nnx.Param, ...)[1]
  state = fsgld_optax.find_fsgld_state(nnx.as_pure(optimizer.opt_state))

  # Reference: slice i at θ + ε_i, with nnx.value_and_grad and the stream keys folded by i.
  losses, grads, outs = [], [], []
  for i, eps in enumerate(perturbations(params, state, n)):
    part = slice(i * 8 // n, (i + 1) * 8 // n)
    (loss_i, out_i), g = nnx.value_and_grad(rngs_loss, has_aux=True)(
      perturbed_copy(model, eps), x[part], y[part], folded_copy(rngs, i)
    )
    losses.append(loss_i)
    grads.append(nnx.to_pure_dict(g))
    outs.append(out_i)

  grad_fn = fsgld_optax.flax.nnx_value_and_grad(
    rngs_loss,
    n_perturbations=n,
    has_aux=True,
    split_batch=True,
    aux_reduction="concat",
    perturbation_batch_size=group,
  )
  (loss, out), g = grad_fn(model, optimizer, x, y, rngs)
  np.testing.assert_allclose(loss, np.mean(losses), rtol=1e-5)
  np.testing.assert_allclose(out, np.concatenate(outs), rtol=1e-5, atol=1e-6)
  assert_tree_allclose(nnx.to_pure_dict(g), jax.tree.map(lambda *a: sum(a) / n, *grads))
  # The two slices drew different masks (same rows of x would otherwise drop the same units).
  mask = lambda r: jax.random.bernoulli(r.dropout(), 0.5, (4, 4))
  assert not np.array_equal(mask(folded_copy(rngs, 0)), mask(folded_copy(rngs, 1)))
  # The key written back is the original one; the counter advanced as for one forward pass.
  np.testing.assert_array_equal(jax.random.key_data(rngs.dropout.key[...]), key_before)
  assert int(rngs.dropout.count[...]) == 1


def test_graph_nodes_in_kwargs_nested_and_shared_with_the_model() -> None:
  # The model holds an Rngs and the same object is passed again, inside a dict, as a keyword
  # argument: one shared stream, advanced once per draw, as nnx.value_and_grad does.
  class Held(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
      self.dense = nnx.Linear(3, 2, rngs=rngs)
      self.rngs = rngs

    def __call__(self, x: jax.Array) -> jax.Array:
      return self.dense(x) * jax.random.bernoulli(self.rngs.noise(), 0.5, (x.shape[0], 2))

  def loss(model: Held, x: jax.Array, extra: dict) -> jax.Array:
    extra["rngs"].noise()  # A draw through the argument ...
    return jnp.sum(model(x) ** 2)  # ... and one through the model.

  model = Held(nnx.Rngs(0, noise=1))
  optimizer = nnx.Optimizer(model, fsgld_optax.fsgld(LR, BETA, sigma=0.0, key=3), wrt=nnx.Param)
  x = data()[0]
  ref_model = nnx.clone(model)
  # nnx.value_and_grad rejects the aliasing; the same computation as a closure.
  ref_loss, ref_grads = nnx.value_and_grad(lambda m: loss(m, x, {"rngs": m.rngs}))(ref_model)
  grad_fn = fsgld_optax.flax.nnx_value_and_grad(loss, n_perturbations=2)
  value, grads = grad_fn(model, optimizer, x, extra={"rngs": model.rngs})
  np.testing.assert_allclose(value, ref_loss, rtol=1e-6)
  assert_tree_allclose(nnx.to_pure_dict(grads), nnx.to_pure_dict(ref_grads), rtol=1e-6)
  assert int(model.rngs.noise.count[...]) == int(ref_model.rngs.noise.count[...]) == 2


# --- batch_argnums and aux_reduction. ------------------------------------------------------


class Plain(nnx.Module):
  def __init__(self, rngs: nnx.Rngs) -> None:
    self.dense = nnx.Linear(3, 2, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.dense(x)


def weighted_loss(model: Plain, x: jax.Array, y: jax.Array, w: jax.Array) -> Any:
  out = model(x)
  return jnp.mean(jnp.sum(w[None] * (out - y[:, None]) ** 2, axis=-1)), out


def make_plain(tx: optax.GradientTransformation) -> tuple[Plain, nnx.Optimizer]:
  model = Plain(nnx.Rngs(0))
  return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def test_batch_argnums_leaves_unbatched_arguments_whole() -> None:
  # Regression: nnx_value_and_grad had no batch_argnums, so a per-feature weight of shape
  # (2,) next to a batch of 8 could not be passed with split_batch.
  n = 2
  model, optimizer = make_plain(fsgld_optax.fsgld(LR, BETA, sigma=SIGMA, key=1))
  x, y = data()
  w = jnp.array([1.0, 3.0])
  params = nnx.split(model, nnx.Param, ...)[1]
  state = fsgld_optax.find_fsgld_state(nnx.as_pure(optimizer.opt_state))
  ref = [
    nnx.value_and_grad(weighted_loss, has_aux=True)(
      perturbed_copy(model, eps), x[4 * i : 4 * i + 4], y[4 * i : 4 * i + 4], w
    )
    for i, eps in enumerate(perturbations(params, state, n))
  ]
  for argnums in ((0, 1), (-3, 1), [1, 0]):
    grad_fn = fsgld_optax.flax.nnx_value_and_grad(
      weighted_loss,
      n_perturbations=n,
      has_aux=True,
      split_batch=True,
      batch_argnums=argnums,
      aux_reduction="stack",
    )
    (loss, out), grads = grad_fn(model, optimizer, x, y, w)
    np.testing.assert_allclose(loss, np.mean([r[0][0] for r in ref]), rtol=1e-5)
    np.testing.assert_allclose(out, np.stack([r[0][1] for r in ref]), rtol=1e-5)
    assert_tree_allclose(
      nnx.to_pure_dict(grads),
      jax.tree.map(lambda a, b: (a + b) / 2, *[nnx.to_pure_dict(r[1]) for r in ref]),
    )


def test_bad_batch_argnums_and_unsplittable_calls_raise() -> None:
  model, optimizer = make_plain(fsgld_optax.fsgld(LR, BETA, key=1))
  x, y = data()
  w = jnp.ones(2)
  make = lambda **kw: fsgld_optax.flax.nnx_value_and_grad(
    weighted_loss, n_perturbations=2, has_aux=True, split_batch=True, aux_reduction="mean", **kw
  )
  with pytest.raises(ValueError, match="batch_argnums"):
    make(batch_argnums=3)(model, optimizer, x, y, w)
  with pytest.raises(ValueError, match="batch_argnums"):
    make(batch_argnums=(0, True))(model, optimizer, x, y, w)
  rngs_model = CallDropoutNet(nnx.Rngs(0))
  rngs_optimizer = nnx.Optimizer(rngs_model, fsgld_optax.fsgld(LR, BETA, key=1), wrt=nnx.Param)
  grad_fn = fsgld_optax.flax.nnx_value_and_grad(
    rngs_loss, n_perturbations=2, has_aux=True, split_batch=True, batch_argnums=(0, 1, 2),
    aux_reduction="concat",
  )  # fmt: skip
  with pytest.raises(ValueError, match="graph node"):
    grad_fn(rngs_model, rngs_optimizer, x, y, nnx.Rngs(dropout=0))
  # An argument that cannot be split is named by its own position, not the wrapper's.
  with pytest.raises(ValueError, match=r"argument \(after model and optimizer\) 2 .* \(2,\)"):
    fsgld_optax.flax.nnx_value_and_grad(
      weighted_loss, n_perturbations=4, has_aux=True, split_batch=True, aux_reduction="mean"
    )(model, optimizer, x, y, w)
  # A loss that closes over its batch, with only the Rngs as argument: nothing to split.
  closed = lambda model, rngs: rngs_loss(model, x, y, rngs)
  grad_fn = fsgld_optax.flax.nnx_value_and_grad(
    closed, n_perturbations=2, has_aux=True, split_batch=True, aux_reduction="concat"
  )
  with pytest.raises(ValueError, match="split_batch"):
    grad_fn(rngs_model, rngs_optimizer, nnx.Rngs(dropout=0))


def test_per_example_aux_under_split_batch_needs_a_choice() -> None:
  model, optimizer = make_plain(fsgld_optax.fsgld(LR, BETA, sigma=0.0, key=1))
  x, y = data()
  w = jnp.ones(2)
  kwargs = dict(n_perturbations=2, has_aux=True, split_batch=True, batch_argnums=(0, 1))
  with pytest.raises(ValueError, match="aux_reduction"):
    fsgld_optax.flax.nnx_value_and_grad(weighted_loss, **kwargs)(model, optimizer, x, y, w)
  # "concat" gives the whole batch's outputs in order: at σ = 0, the plain forward pass.
  grad_fn = fsgld_optax.flax.nnx_value_and_grad(weighted_loss, aux_reduction="concat", **kwargs)
  (_, out), _ = grad_fn(model, optimizer, x, y, w)
  np.testing.assert_allclose(out, model(x), rtol=1e-5, atol=1e-6)
  # A prefix: the loss's pieces reduced differently.
  two = lambda m, x, y, w: (weighted_loss(m, x, y, w)[0], {"out": m(x), "norm": jnp.mean(x)})
  grad_fn = fsgld_optax.flax.nnx_value_and_grad(
    two, aux_reduction={"out": "concat", "norm": "mean"}, **kwargs
  )
  (_, aux), _ = grad_fn(model, optimizer, x, y, w)
  np.testing.assert_allclose(aux["out"], model(x), rtol=1e-5, atol=1e-6)
  # A prefix that does not fit the loss's aux is named with the user's structures.
  bad = fsgld_optax.flax.nnx_value_and_grad(two, aux_reduction={"logits": "concat"}, **kwargs)
  with pytest.raises(ValueError, match=r"aux_reduction=\{'logits': 'concat'\} is not a pytree"):
    bad(model, optimizer, x, y, w)
  np.testing.assert_allclose(aux["norm"], jnp.mean(x), rtol=1e-6)


def test_rwp_chained_with_adamw() -> None:
  # The perturbation state sits inside an optax chain; the helper finds it.
  tx = optax.chain(fsgld_optax.rwp(SIGMA, key=4), optax.adamw(1e-2))
  model, optimizer = make_plain(tx)
  x, y = data()
  w = jnp.ones(2)
  params = nnx.split(model, nnx.Param, ...)[1]
  state = fsgld_optax.find_fsgld_state(nnx.as_pure(optimizer.opt_state))
  (eps,) = perturbations(params, state, 1)
  (ref_loss, _), ref_grads = nnx.value_and_grad(weighted_loss, has_aux=True)(
    perturbed_copy(model, eps), x, y, w
  )
  grad_fn = fsgld_optax.flax.nnx_value_and_grad(weighted_loss, has_aux=True)
  (loss, _), grads = grad_fn(model, optimizer, x, y, w)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  assert_tree_allclose(nnx.to_pure_dict(grads), nnx.to_pure_dict(ref_grads))
  optimizer.update(model, grads)
  assert int(fsgld_optax.find_fsgld_state(nnx.as_pure(optimizer.opt_state)).count) == 1


def test_wrt_other_than_the_optimizers_is_named() -> None:
  class WithLoRA(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
      self.dense = nnx.Linear(3, 2, rngs=rngs)
      self.lora = nnx.LoRA(3, 1, 2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
      return self.dense(x) + self.lora(x)

  model = WithLoRA(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, fsgld_optax.fsgld(LR, BETA, key=1), wrt=nnx.LoRAParam)
  loss = lambda m, x: jnp.sum(m(x) ** 2)
  x = data()[0]
  with pytest.raises(ValueError, match="wrt"):
    fsgld_optax.flax.nnx_value_and_grad(loss)(model, optimizer, x)
  _, grads = fsgld_optax.flax.nnx_value_and_grad(loss, wrt=nnx.LoRAParam)(model, optimizer, x)
  optimizer.update(model, grads)
  assert set(nnx.to_pure_dict(grads)) == {"lora"}


@pytest.mark.parametrize(("name", "value"), BAD_WRAPPER_OPTIONS)
def test_options_are_checked_when_the_step_is_built(name: str, value: Any) -> None:
  with pytest.raises((TypeError, ValueError), match=name):
    fsgld_optax.flax.nnx_value_and_grad(loss_fn, **{name: value})
