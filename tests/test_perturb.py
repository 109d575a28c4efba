"""The perturbed-gradient wrapper: exact means, batch splitting, antithetic pairs, aux, nesting."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fsgld_optax
from fsgld_optax import _randomness

SIGMA = 0.1


def make_params() -> dict:
  k1, k2 = jax.random.split(jax.random.key(0))
  return {"w": jax.random.normal(k1, (5, 3)), "b": jax.random.normal(k2, (3,))}


def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.mean((jnp.tanh(x @ params["w"] + params["b"][None, :]) - y) ** 2)


def make_batch(size: int = 8) -> tuple[jax.Array, jax.Array]:
  kx, ky = jax.random.split(jax.random.key(1))
  return jax.random.normal(kx, (size, 5)), jax.random.normal(ky, (size, 3))


def draws(opt_state, params: dict, n: int, antithetic: bool = False) -> list[dict]:
  """The step's perturbations ε_i, reproduced from the state's key and count."""
  state = fsgld_optax.find_fsgld_state(opt_state)
  key = _randomness.perturbation_key(state.rng_key, state.count)
  keys = jax.random.split(key, n // 2 if antithetic else n)
  eps = [_randomness.standard_noise_like(k, params, "gaussian") for k in keys]
  if antithetic:
    eps = eps + [jax.tree.map(jnp.negative, e) for e in eps]
  return eps


def manual(params, eps, batches):
  """Mean value and gradient at θ + σ ε_i on batch i, in a Python loop."""
  results = [
    jax.value_and_grad(loss_fn)(jax.tree.map(lambda p, e: p + SIGMA * e, params, e), *b)
    for e, b in zip(eps, batches, strict=True)
  ]
  values = jnp.mean(jnp.stack([v for v, _ in results]))
  grads = jax.tree.map(lambda *g: jnp.mean(jnp.stack(g), axis=0), *[g for _, g in results])
  return values, grads


def assert_close(a, b, rtol=1e-6, atol=1e-7):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


def fsgld_state(params, count: int = 0):
  state = fsgld_optax.rwp(SIGMA, key=3).init(params)
  return state._replace(count=jnp.asarray(count, jnp.int32))


@pytest.mark.parametrize("n", [1, 2, 5])
def test_mean_value_and_gradient_are_exact(n):
  params, batch = make_params(), make_batch()
  state = fsgld_state(params, count=4)
  value, grads = jax.jit(fsgld_optax.perturbed_value_and_grad(loss_fn, n_perturbations=n))(
    params, state, *batch
  )
  expected = manual(params, draws(state, params, n), [batch] * n)
  assert_close((value, grads), expected)


@pytest.mark.parametrize("n", [2, 4])
def test_split_batch_gives_perturbation_i_the_ith_slice(n):
  params, (x, y) = make_params(), make_batch(8)
  state = fsgld_state(params, count=2)
  value, grads = jax.jit(
    fsgld_optax.perturbed_value_and_grad(loss_fn, n_perturbations=n, split_batch=True)
  )(params, state, x, y)
  m = 8 // n
  slices = [(x[i * m : (i + 1) * m], y[i * m : (i + 1) * m]) for i in range(n)]
  assert_close((value, grads), manual(params, draws(state, params, n), slices))


def test_split_batch_respects_batch_argnums():
  params, (x, y) = make_params(), make_batch(4)
  state = fsgld_state(params)

  def loss(params, x, y_full):
    # y_full is not split: every perturbation sees all of it.
    return loss_fn(params, x, y_full[: x.shape[0]])

  value, grads = fsgld_optax.perturbed_value_and_grad(
    loss, n_perturbations=2, split_batch=True, batch_argnums=0
  )(params, state, x, y)
  slices = [(x[:2], y[:2]), (x[2:], y[:2])]
  assert_close((value, grads), manual(params, draws(state, params, 2), slices))


def test_antithetic_pairs_plus_and_minus_epsilon():
  params, batch = make_params(), make_batch()
  state = fsgld_state(params, count=1)
  out = fsgld_optax.perturbed_value_and_grad(loss_fn, n_perturbations=4, antithetic=True)(
    params, state, *batch
  )
  assert_close(out, manual(params, draws(state, params, 4, antithetic=True), [batch] * 4))


def test_antithetic_cancels_perturbation_noise_on_a_quadratic():
  # For U = ½‖θ‖², ∇U(θ ± σε) averages to θ exactly: the odd-order terms cancel.
  params = {"a": jnp.linspace(-1.0, 1.0, 1000)}
  state = fsgld_state(params)
  _, grads = fsgld_optax.perturbed_value_and_grad(
    lambda p: 0.5 * jnp.sum(p["a"] ** 2), n_perturbations=2, antithetic=True
  )(params, state)
  np.testing.assert_allclose(grads["a"], params["a"], atol=1e-6)


def test_kwargs_pass_through_unsplit():
  params, (x, y) = make_params(), make_batch(4)
  state = fsgld_state(params)
  out = fsgld_optax.perturbed_value_and_grad(loss_fn, n_perturbations=2, split_batch=True)(
    params, state, x, y=y[:2]
  )
  slices = [(x[:2], y[:2]), (x[2:], y[:2])]
  assert_close(out, manual(params, draws(state, params, 2), slices))


def test_aux_floating_leaves_are_averaged_and_others_taken_from_the_first():
  params, batch = make_params(), make_batch()
  state = fsgld_state(params)

  def loss_with_aux(params, x, y):
    out = x @ params["w"] + params["b"][None, :]
    return loss_fn(params, x, y), {"mean_out": jnp.mean(out, axis=0), "steps": jnp.int32(7)}

  (value, aux), grads = fsgld_optax.perturbed_value_and_grad(
    loss_with_aux, n_perturbations=3, has_aux=True
  )(params, state, *batch)
  eps = draws(state, params, 3)
  outs = [
    jnp.mean(
      batch[0] @ (params["w"] + SIGMA * e["w"]) + (params["b"] + SIGMA * e["b"])[None, :], axis=0
    )
    for e in eps
  ]
  np.testing.assert_allclose(aux["mean_out"], jnp.mean(jnp.stack(outs), axis=0), rtol=1e-5)
  assert aux["steps"].dtype == jnp.int32
  assert int(aux["steps"]) == 7
  assert_close((value, grads), manual(params, eps, [batch] * 3))


@pytest.mark.parametrize(
  "wrap",
  [
    lambda tx: optax.chain(optax.clip_by_global_norm(1.0), tx),
    lambda tx: optax.MultiSteps(tx, every_k_schedule=2),
    lambda tx: optax.masked(tx, {"w": True, "b": True}),
    lambda tx: optax.apply_if_finite(tx, max_consecutive_errors=3),
    lambda tx: optax.chain(optax.scale(1.0), optax.chain(tx, optax.identity())),
  ],
  ids=["chain", "multisteps", "masked", "apply_if_finite", "nested_chain"],
)
def test_finds_the_state_inside_optax_nesting(wrap):
  params, batch = make_params(), make_batch()
  inner = fsgld_optax.fsgld(0.1, 1e4, sigma=SIGMA, key=3)
  opt_state = wrap(inner).init(params)
  out = fsgld_optax.perturbed_value_and_grad(loss_fn, n_perturbations=2)(params, opt_state, *batch)
  assert_close(out, manual(params, draws(inner.init(params), params, 2), [batch] * 2))


def test_finds_the_state_inside_inject_hyperparams():
  params = make_params()
  tx = optax.inject_hyperparams(fsgld_optax.fsgld)(learning_rate=0.1, beta=1e4, key=3)
  state = fsgld_optax.find_fsgld_state(tx.init(params))
  assert isinstance(state, fsgld_optax.FSGLDState)


def test_no_fsgld_state_is_a_clear_error():
  params, batch = make_params(), make_batch()
  grad_fn = fsgld_optax.perturbed_value_and_grad(loss_fn)
  with pytest.raises(ValueError, match="No FSGLDState"):
    grad_fn(params, optax.sgd(0.1).init(params), *batch)


def test_two_fsgld_states_is_a_clear_error():
  params, batch = make_params(), make_batch()
  tx = optax.chain(fsgld_optax.fsgld(0.1, 1e4, key=0), fsgld_optax.fsgld(0.1, 1e4, key=1))
  grad_fn = fsgld_optax.perturbed_value_and_grad(loss_fn)
  with pytest.raises(ValueError, match=r"Found 2 FSGLDStates.*\[0\].*\[1\]"):
    grad_fn(params, tx.init(params), *batch)


def test_split_batch_that_does_not_divide_is_a_clear_error():
  params, batch = make_params(), make_batch(6)
  grad_fn = fsgld_optax.perturbed_value_and_grad(loss_fn, n_perturbations=4, split_batch=True)
  with pytest.raises(ValueError, match=r"split_batch.*divisible by 4"):
    grad_fn(params, fsgld_state(params), *batch)


@pytest.mark.parametrize(
  ("kwargs", "match"),
  [
    ({"n_perturbations": 0}, "n_perturbations"),
    ({"n_perturbations": 2.0}, "n_perturbations"),
    ({"n_perturbations": True}, "n_perturbations"),
    ({"n_perturbations": 3, "antithetic": True}, "even"),
    ({"per_device_perturbations": True}, "axis_name"),
    ({"perturbation": "uniform"}, "perturbation"),
  ],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    fsgld_optax.perturbed_value_and_grad(loss_fn, **kwargs)


def test_bad_batch_argnums_is_a_clear_error():
  params, batch = make_params(), make_batch()
  grad_fn = fsgld_optax.perturbed_value_and_grad(
    loss_fn, n_perturbations=2, split_batch=True, batch_argnums=5
  )
  with pytest.raises(ValueError, match="batch_argnums"):
    grad_fn(params, fsgld_state(params), *batch)


@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("antithetic", [False, True], ids=["iid", "antithetic"])
def test_groups_agree_with_all_at_once(group, antithetic):
  """Groups in a loop with running sums equal one vmap over all n, up to float32 rounding.

  Only the order of the sums over perturbations differs (group by group, then / n, against one
  reduction over n), a few float32 ulp, hence rtol 1e-6 and atol 1e-7 (for entries near 0).
  """
  n = 4
  params, (x, y) = make_params(), make_batch(8)
  state = fsgld_state(params, count=5)

  def loss_with_aux(params, x, y):
    out = jnp.tanh(x @ params["w"] + params["b"][None, :])
    aux = {"stat": jnp.mean(out, axis=0), "per_example": out, "theta": params, "n": jnp.int32(3)}
    return jnp.mean((out - y) ** 2), aux

  reductions = {"stat": "mean", "per_example": "concat", "theta": "stack", "n": "mean"}
  kwargs: dict[str, Any] = dict(
    n_perturbations=n,
    has_aux=True,
    split_batch=True,
    antithetic=antithetic,
    aux_reduction=reductions,
  )
  at_once = jax.jit(fsgld_optax.perturbed_value_and_grad(loss_with_aux, **kwargs))
  grouped = jax.jit(
    fsgld_optax.perturbed_value_and_grad(loss_with_aux, perturbation_batch_size=group, **kwargs)
  )
  (value, aux), grads = grouped(params, state, x, y)
  (value_ref, aux_ref), grads_ref = at_once(params, state, x, y)
  assert_close((value, grads, aux["stat"]), (value_ref, grads_ref, aux_ref["stat"]))
  assert aux["per_example"].shape == (8, 3)
  np.testing.assert_allclose(aux["per_example"], aux_ref["per_example"], rtol=1e-6, atol=1e-7)
  assert int(aux["n"]) == 3 and aux["n"].dtype == jnp.int32
  # The same draws: θ + σε differs at most by the rounding of the multiply-add (XLA fuses it
  # into an FMA or not depending on the program around it).
  assert_close(aux["theta"], aux_ref["theta"])
  # Both equal the plain loop over perturbations (so neither is trivially wrong).
  eps = draws(state, params, n, antithetic)
  slices = [(x[2 * i : 2 * i + 2], y[2 * i : 2 * i + 2]) for i in range(n)]
  assert_close((value, grads), manual(params, eps, slices))
  for i, e in enumerate(eps):
    expected = jax.tree.map(lambda p, d: p + SIGMA * d, params, e)
    assert_close({k: t[i] for k, t in aux["theta"].items()}, expected)


def test_stack_has_a_leading_axis_of_length_n_also_for_n_1():
  params, batch = make_params(), make_batch()
  state = fsgld_state(params)
  grad_fn = fsgld_optax.perturbed_value_and_grad(
    lambda p, x, y: (loss_fn(p, x, y), p), has_aux=True, aux_reduction="stack"
  )
  (_, perturbed), _ = grad_fn(params, state, *batch)
  (e,) = draws(state, params, 1)
  assert_close(perturbed, jax.tree.map(lambda p, d: (p + SIGMA * d)[None], params, e))
