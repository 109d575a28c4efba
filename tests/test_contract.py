"""The contract every optimizer in the package passes: optax idioms and the randomness contract."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fsgld_optax
from fsgld_optax import _randomness

OPTIMIZERS = {
  "fsgld": lambda key: fsgld_optax.fsgld(0.05, 1e4, weight_decay=1e-3, key=key),
  "fsgld_sigma": lambda key: fsgld_optax.fsgld(0.05, 1e4, sigma=0.05, key=key),
  "fsgld_cheap": lambda key: fsgld_optax.fsgld(0.05, 1e4, key=key, langevin_noise="binomial"),
  "fsgld_schedules": lambda key: fsgld_optax.fsgld(
    optax.cosine_decay_schedule(0.05, 100),
    lambda count: 1e3 * (1.0 + count),
    sigma=lambda count: 0.1 / (1.0 + count),
    key=key,
  ),
  "rwp": lambda key: fsgld_optax.fsgld(0.05, float("inf"), sigma=0.05, key=key),
  "sgld": lambda key: fsgld_optax.sgld(0.05, 1e4, key=key),
  "fsghmc": lambda key: fsgld_optax.fsghmc(0.05, 1e4, momentum=0.9, weight_decay=1e-3, key=key),
  "sghmc": lambda key: fsgld_optax.sghmc(0.05, 1e4, momentum=0.5, key=key),
  "preconditioned_fsgld": lambda key: fsgld_optax.preconditioned_fsgld(
    0.01, 1e4, decay=0.99, weight_decay=1e-3, key=key
  ),
  "psgld": lambda key: fsgld_optax.psgld(0.01, 1e4, decay=0.999, key=key),
  "rwp_sgd_momentum": lambda key: optax.chain(
    fsgld_optax.rwp(0.05, key=key), optax.sgd(0.05, momentum=0.9)
  ),
  "rwp_adamw": lambda key: optax.chain(fsgld_optax.rwp(0.05, key=key), optax.adamw(1e-3)),
}
optimizers = pytest.mark.parametrize("make_tx", list(OPTIMIZERS.values()), ids=list(OPTIMIZERS))


def make_params(dtype=jnp.float32) -> dict:
  k1 = jax.random.key(0)
  return {
    "w": jax.random.normal(k1, (4, 3), dtype),
    "b": jnp.zeros((3,), dtype),
    "s": jnp.asarray(0.5, dtype),
  }


def loss_fn(params: dict, x: jax.Array) -> jax.Array:
  out = x @ params["w"].astype(jnp.float32) + params["b"].astype(jnp.float32)[None, :]
  return jnp.mean(out**2) + params["s"].astype(jnp.float32) ** 2


BATCH = jnp.linspace(-1.0, 1.0, 32).reshape(8, 4)


def make_step(tx, n=2, **wrapper_kwargs):
  grad_fn = fsgld_optax.perturbed_value_and_grad(loss_fn, n_perturbations=n, **wrapper_kwargs)

  def step(params, opt_state):
    _, grads = grad_fn(params, opt_state, BATCH)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return step


def run(tx, steps=5, params=None, **wrapper_kwargs):
  params = make_params() if params is None else params
  step = jax.jit(make_step(tx, **wrapper_kwargs))
  opt_state = tx.init(params)
  for _ in range(steps):
    params, opt_state = step(params, opt_state)
  return params, opt_state


def assert_trees_equal(a, b):
  """Bitwise equality, typed keys compared through their key data."""
  as_data = lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(as_data(x), as_data(y)), a, b)


# --- optax idioms ------------------------------------------------------------------------


@optimizers
def test_jit_does_not_recompile(make_tx):
  tx = make_tx(0)
  traces = []

  def step(params, opt_state):
    traces.append(None)
    return make_step(tx)(params, opt_state)

  step = jax.jit(step)
  params, opt_state = make_params(), tx.init(make_params())
  for _ in range(3):
    params, opt_state = step(params, opt_state)
  assert len(traces) == 1


@optimizers
def test_state_types_are_stable_under_cond(make_tx):
  tx = make_tx(0)
  params = make_params()
  state = tx.init(params)
  _, new_state = tx.update(params, state, params)
  chex.assert_trees_all_equal_structs(state, new_state)
  chex.assert_trees_all_equal_dtypes(state, new_state)
  chex.assert_trees_all_equal_shapes(state, new_state)

  @jax.jit
  def maybe_update(pred, state):
    return jax.lax.cond(pred, lambda s: tx.update(params, s, params)[1], lambda s: s, state)

  assert int(fsgld_optax.find_fsgld_state(maybe_update(True, state)).count) == 1
  assert int(fsgld_optax.find_fsgld_state(maybe_update(False, state)).count) == 0


@optimizers
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_parameters_keep_their_dtype(make_tx, dtype):
  tx = make_tx(0)
  params, opt_state = run(tx, steps=2, params=make_params(dtype))
  for leaf in jax.tree.leaves(params):
    assert leaf.dtype == dtype
  assert jnp.all(
    jnp.isfinite(jnp.stack([jnp.sum(p.astype(jnp.float32)) for p in [*jax.tree.leaves(params)]]))
  )
  assert int(fsgld_optax.find_fsgld_state(opt_state).count) == 2


@optimizers
def test_extra_update_arguments_are_ignored(make_tx):
  tx = make_tx(0)
  params = make_params()
  state = tx.init(params)
  a, _ = tx.update(params, state, params)
  b, _ = tx.update(params, state, params, value=jnp.asarray(1.0), unused="x")
  assert_trees_equal(a, b)


@optimizers
def test_chain_with_clipping_equals_fsgld_on_clipped_gradients(make_tx):
  params = make_params()
  grads = jax.tree.map(lambda p: 10.0 * jnp.ones_like(p), params)
  chained = optax.chain(optax.clip_by_global_norm(1.0), make_tx(1))
  clipped, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
  tx = make_tx(1)
  expected, _ = tx.update(clipped, tx.init(params), params)
  actual, _ = chained.update(grads, chained.init(params), params)
  assert_trees_equal(actual, expected)


@optimizers
def test_multisteps_applies_fsgld_to_the_mean_gradient(make_tx):
  params = make_params()
  g1 = jax.tree.map(jnp.ones_like, params)
  g2 = jax.tree.map(lambda p: -3.0 * jnp.ones_like(p), params)
  multi = optax.MultiSteps(make_tx(2), every_k_schedule=2)
  state = multi.init(params)
  u1, state = multi.update(g1, state, params)
  u2, state = multi.update(g2, state, params)
  jax.tree.map(lambda u: np.testing.assert_array_equal(u, 0.0), u1)
  tx = make_tx(2)
  mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
  expected, _ = tx.update(mean, tx.init(params), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9), u2, expected)
  assert int(fsgld_optax.find_fsgld_state(state).count) == 1


def test_inject_hyperparams_gives_identical_updates():
  plain = fsgld_optax.fsgld(0.05, 1e4, eta=0.1, weight_decay=1e-3, key=9)
  injected = optax.inject_hyperparams(fsgld_optax.fsgld)(
    learning_rate=0.05, beta=1e4, eta=0.1, weight_decay=1e-3, key=9
  )
  assert_trees_equal(run(plain)[0], run(injected)[0])


def test_inject_hyperparams_can_change_the_learning_rate():
  params = make_params()
  tx = optax.inject_hyperparams(fsgld_optax.fsgld)(learning_rate=0.05, beta=1e4, key=9)
  state = tx.init(params)
  state.hyperparams["learning_rate"] = jnp.asarray(0.0)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, state, params)
  jax.tree.map(lambda u: np.testing.assert_array_equal(u, 0.0), updates)


# --- schedules: the wrapper and the update use step k's values ---------------------------

LR_FN = lambda count: 0.05 / (1.0 + count)
BETA_FN = lambda count: 1e3 * (1.0 + count) ** 2
SIGMA_FN = lambda count: 0.2 / (1.0 + count)


@pytest.mark.parametrize("sigma", [None, SIGMA_FN], ids=["coupled", "scheduled"])
@pytest.mark.parametrize("inject", [False, True])
def test_schedules_are_used_at_step_k_by_wrapper_and_update(sigma, inject):
  if inject:
    # σ and β must be static so that fsgld evaluates them itself at step k; the learning
    # rate can be injected.
    factory = optax.inject_hyperparams(fsgld_optax.fsgld, static_args=("beta", "sigma"))
  else:
    factory = fsgld_optax.fsgld
  tx = factory(learning_rate=LR_FN, beta=BETA_FN, sigma=sigma, eta=0.1, key=4)
  sigma_at = (lambda k: BETA_FN(k) ** (-1.1 / 4)) if sigma is None else SIGMA_FN
  params = {"a": jnp.zeros((64,))}
  quadratic = lambda p: 0.5 * jnp.sum(p["a"] ** 2)
  grad_fn = jax.jit(fsgld_optax.perturbed_value_and_grad(quadratic))
  update = jax.jit(tx.update)
  opt_state = tx.init(params)
  for k in range(4):
    state = fsgld_optax.find_fsgld_state(opt_state)
    assert int(fsgld_optax.find_fsgld_state(state).count) == k
    _, grads = grad_fn(params, opt_state)
    eps = _randomness.standard_noise_like(
      jax.random.split(
        _randomness.perturbation_key(
          fsgld_optax.find_fsgld_state(state).rng_key, fsgld_optax.find_fsgld_state(state).count
        ),
        1,
      )[0],
      params,
      "gaussian",
    )
    # ∇(½‖θ‖²) at θ + σ_k ε is θ + σ_k ε.
    np.testing.assert_allclose(
      grads["a"], params["a"] + sigma_at(k) * eps["a"], rtol=1e-5, atol=1e-7
    )
    updates, opt_state = update(grads, opt_state, params)
    xi = _randomness.standard_noise_like(
      _randomness.langevin_key(
        fsgld_optax.find_fsgld_state(state).rng_key, fsgld_optax.find_fsgld_state(state).count
      ),
      params,
      "gaussian",
    )
    expected = -LR_FN(k) * grads["a"] + np.sqrt(2 * LR_FN(k) / BETA_FN(k)) * xi["a"]
    np.testing.assert_allclose(updates["a"], expected, rtol=1e-5, atol=1e-8)
    params = optax.apply_updates(params, updates)


# --- the randomness contract on one device ----------------------------------------------


@optimizers
def test_same_key_same_trajectory_bitwise_and_another_key_another(make_tx):
  first = run(make_tx(5))
  assert_trees_equal(first, run(make_tx(5)))
  other, _ = run(make_tx(6))
  assert not np.array_equal(first[0]["w"], other["w"])


def test_int_seed_and_typed_key_and_legacy_key_agree():
  runs = [
    run(fsgld_optax.fsgld(0.05, 1e4, key=key))[0]
    for key in (5, jax.random.key(5), jax.random.PRNGKey(5))
  ]
  assert_trees_equal(runs[0], runs[1])
  assert_trees_equal(runs[0], runs[2])


def test_state_holds_a_typed_key():
  state = fsgld_optax.fsgld(0.05, 1e4, key=0).init(make_params())
  assert jnp.issubdtype(fsgld_optax.find_fsgld_state(state).rng_key.dtype, jax.dtypes.prng_key)
  assert fsgld_optax.find_fsgld_state(state).count.dtype == jnp.int32


def test_perturbation_and_langevin_noise_are_reproducible_from_key_and_step():
  """ε of step k comes from perturbation_key(k); ξ of step k from langevin_key(k)."""
  params = {"a": jnp.zeros((256,))}
  tx = fsgld_optax.fsgld(0.05, 1e4, sigma=0.1, key=8)
  quadratic = lambda p: 0.5 * jnp.sum(p["a"] ** 2)
  grad_fn = jax.jit(fsgld_optax.perturbed_value_and_grad(quadratic))
  opt_state = tx.init(params)
  seen = []
  for k in range(3):
    _, grads = grad_fn(params, opt_state)
    zero_updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), opt_state, params)
    eps = grads["a"] / 0.1  # θ = 0, so the gradient is σ ε
    xi = zero_updates["a"] / np.sqrt(2 * 0.05 / 1e4)
    key = jax.random.key(8)
    expected_eps = _randomness.standard_noise_like(
      jax.random.split(_randomness.perturbation_key(key, jnp.int32(k)), 1)[0],
      params,
      "gaussian",
    )["a"]
    expected_xi = _randomness.standard_noise_like(
      _randomness.langevin_key(key, jnp.int32(k)), params, "gaussian"
    )["a"]
    np.testing.assert_allclose(eps, expected_eps, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(xi, expected_xi, rtol=1e-5, atol=1e-6)
    seen += [expected_eps, expected_xi]
    _, opt_state = tx.update(grads, opt_state, params)
  # ε and ξ differ within a step and neither repeats across steps: |corr| < 5/√256.
  for i in range(len(seen)):
    for j in range(i):
      assert abs(np.corrcoef(seen[i], seen[j])[0, 1]) < 5 / np.sqrt(256)


def test_wrapper_and_update_agree_on_the_step_inside_multisteps():
  params = {"a": jnp.zeros((16,))}
  multi = optax.MultiSteps(fsgld_optax.fsgld(0.05, 1e4, sigma=0.1, key=1), every_k_schedule=3)
  quadratic = lambda p: 0.5 * jnp.sum(p["a"] ** 2)
  grad_fn = fsgld_optax.perturbed_value_and_grad(quadratic)
  opt_state = multi.init(params)
  grads_seen = []
  for _ in range(6):
    _, grads = grad_fn(params, opt_state)
    grads_seen.append(grads["a"])
    _, opt_state = multi.update(grads, opt_state, params)
  # The micro-batches of one optimizer step share ε (fSGLD on the accumulated batch).
  np.testing.assert_array_equal(grads_seen[0], grads_seen[2])
  np.testing.assert_array_equal(grads_seen[3], grads_seen[5])
  assert not np.array_equal(grads_seen[0], grads_seen[3])


def test_init_under_vmap_gives_independent_chains():
  keys = jax.random.split(jax.random.key(0), 4)
  params = {"a": jnp.zeros((8,))}

  def one_chain(key):
    tx = fsgld_optax.fsgld(0.05, 1e2, key=key)
    updates, _ = tx.update(params, tx.init(params), params)
    return updates["a"]

  updates = jax.vmap(one_chain)(keys)
  assert len({tuple(np.asarray(u)) for u in updates}) == 4
