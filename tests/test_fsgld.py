"""The fSGLD update against a plain NumPy reference of the paper's equation, and its reductions."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fsgld_optax
from fsgld_optax import _randomness

source_of = fsgld_optax.find_fsgld_state

LR, BETA, ETA, WD = 0.05, 1e4, 0.1, 0.01


def make_params() -> dict:
  """A pytree with several leaves, shapes and a scalar."""
  k1, k2, k3 = jax.random.split(jax.random.key(42), 3)
  return {
    "dense": {"w": jax.random.normal(k1, (3, 4)), "b": jnp.linspace(-1.0, 1.0, 4)},
    "conv": jax.random.normal(k2, (2, 2, 3, 5)),
    "scale": jax.random.normal(k3, ()),
  }


def loss_fn(params: dict) -> jax.Array:
  """U(θ) = Σ (θ⁴/4 + θ²/2 − θ/3): a non-quadratic loss with a closed-form gradient."""
  return sum(jnp.sum(p**4 / 4 + p**2 / 2 - p / 3) for p in jax.tree.leaves(params))


def reference_grad(theta: np.ndarray) -> np.ndarray:
  return theta**3 + theta - np.float32(1 / 3)


@jax.jit(static_argnames="n")
def library_draws(rng_key: jax.Array, count: jax.Array, params: dict, n: int) -> tuple:
  """The step's n perturbation draws and its Langevin draw, reproduced from the key."""
  keys = jax.random.split(_randomness.perturbation_key(rng_key, count), n)
  eps = [_randomness.standard_noise_like(k, params, "gaussian") for k in keys]
  xi = _randomness.standard_noise_like(_randomness.langevin_key(rng_key, count), params, "gaussian")
  return eps, xi


def reference_run(params: dict, *, key: int, steps: int, n: int, sigma: float) -> dict:
  """DESIGN §1 in NumPy float32, with the library's ε and ξ draws."""
  rng_key = jax.random.key(key)
  theta = jax.tree.map(lambda p: np.asarray(p, np.float32), params)
  lr, beta, wd = np.float32(LR), np.float32(BETA), np.float32(WD)
  noise_scale = np.sqrt(np.float32(2) * lr / beta)
  for k in range(steps):
    eps, xi = jax.tree.map(np.asarray, library_draws(rng_key, jnp.int32(k), params, n))
    g = jax.tree.map(
      lambda t, *es: sum(reference_grad(t + np.float32(sigma) * e) for e in es) / np.float32(n),
      theta,
      *eps,
    )
    theta = jax.tree.map(lambda t, g, x: t - lr * (g + wd * t) + noise_scale * x, theta, g, xi)
  return theta


def library_run(params: dict, *, key: int, steps: int, n: int) -> dict:
  tx = fsgld_optax.fsgld(LR, BETA, eta=ETA, weight_decay=WD, key=key)
  grad_fn = fsgld_optax.perturbed_value_and_grad(loss_fn, n_perturbations=n)

  @jax.jit
  def step(params, opt_state):
    _, grads = grad_fn(params, opt_state)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = tx.init(params)
  for _ in range(steps):
    params, opt_state = step(params, opt_state)
  return params


def test_coupled_sigma_matches_formula():
  for beta, eta in [(1e8, 0.1), (1e7, 0.01), (1e9, 0.1), (4.0, 0.5)]:
    expected = beta ** (-(1 + eta) / 4)
    np.testing.assert_allclose(fsgld_optax.coupled_sigma(beta, eta), expected, rtol=1e-6)
  assert float(fsgld_optax.coupled_sigma(float("inf"), 0.1)) == 0.0
  state = fsgld_optax.fsgld(LR, BETA, eta=ETA, key=0).init(make_params())
  np.testing.assert_allclose(source_of(state).sigma, BETA ** (-(1 + ETA) / 4), rtol=1e-6)


@pytest.mark.parametrize("steps", [1, 50])
@pytest.mark.parametrize("n", [1, 3])
def test_matches_numpy_reference(steps, n):
  params = make_params()
  sigma = BETA ** (-(1 + ETA) / 4)
  expected = reference_run(params, key=7, steps=steps, n=n, sigma=sigma)
  actual = library_run(params, key=7, steps=steps, n=n)
  jax.tree.map(
    lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6), actual, expected
  )


def test_sigma_zero_beta_inf_is_sgd_with_weight_decay():
  params = make_params()
  tx = fsgld_optax.fsgld(LR, float("inf"), sigma=0.0, weight_decay=WD, key=0)
  sgd = optax.chain(optax.add_decayed_weights(WD), optax.sgd(LR))
  grad_fn = fsgld_optax.perturbed_value_and_grad(loss_fn)

  @jax.jit
  def steps(p_fsgld, state, p_sgd, sgd_state):
    _, g = grad_fn(p_fsgld, state)
    u, state = tx.update(g, state, p_fsgld)
    u_sgd, sgd_state = sgd.update(jax.grad(loss_fn)(p_sgd), sgd_state, p_sgd)
    return optax.apply_updates(p_fsgld, u), state, optax.apply_updates(p_sgd, u_sgd), sgd_state

  state, sgd_state, p_fsgld, p_sgd = tx.init(params), sgd.init(params), params, params
  for _ in range(20):
    p_fsgld, state, p_sgd, sgd_state = steps(p_fsgld, state, p_sgd, sgd_state)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-7), p_fsgld, p_sgd)


def test_beta_inf_adds_no_noise():
  params = make_params()
  grads = jax.tree.map(jnp.ones_like, params)
  tx = fsgld_optax.fsgld(LR, float("inf"), sigma=0.1, weight_decay=WD, key=0)
  updates, _ = tx.update(grads, tx.init(params), params)
  jax.tree.map(
    lambda u, g, p: np.testing.assert_array_equal(u, -LR * (g + WD * p)), updates, grads, params
  )


def test_beta_inf_schedule_adds_no_noise():
  params = make_params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  tx = fsgld_optax.fsgld(LR, lambda count: jnp.inf, sigma=0.1, key=0)
  updates, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
  jax.tree.map(lambda u: np.testing.assert_array_equal(u, 0.0), updates)


@pytest.mark.parametrize("n", [1, 4])
def test_sigma_zero_perturbs_nothing(n):
  params = make_params()
  opt_state = fsgld_optax.sgld(LR, BETA, key=3).init(params)
  grad_fn = fsgld_optax.perturbed_value_and_grad(loss_fn, n_perturbations=n)
  value, grads = jax.jit(grad_fn)(params, opt_state)
  expected_value, expected = jax.value_and_grad(loss_fn)(params)
  np.testing.assert_allclose(value, expected_value, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), grads, expected)


def test_sgld_is_fsgld_with_sigma_zero():
  params = make_params()
  grads = jax.tree.map(jnp.ones_like, params)
  a = fsgld_optax.sgld(LR, BETA, weight_decay=WD, key=5)
  b = fsgld_optax.fsgld(LR, BETA, sigma=0.0, weight_decay=WD, key=5)
  ua, sa = a.update(grads, a.init(params), params)
  ub, sb = b.update(grads, b.init(params), params)
  jax.tree.map(np.testing.assert_array_equal, (ua, source_of(sa).sigma), (ub, source_of(sb).sigma))


@pytest.mark.parametrize("langevin_noise", ["gaussian", "binomial"])
def test_langevin_noise_std(langevin_noise):
  # 10⁶ parameters: the sample std's relative standard error is 1/sqrt(2N) ≈ 0.07%,
  # so the 1% tolerance is about 14 standard errors.
  params = {"a": jnp.zeros((500, 1000)), "b": jnp.zeros((500_000,))}
  zeros = jax.tree.map(jnp.zeros_like, params)
  tx = fsgld_optax.fsgld(LR, BETA, key=11, langevin_noise=langevin_noise)
  updates, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
  flat = jnp.concatenate([u.ravel() for u in jax.tree.leaves(updates)])
  assert flat.size == 10**6
  np.testing.assert_allclose(jnp.std(flat), np.sqrt(2 * LR / BETA), rtol=0.01)
  assert abs(float(jnp.mean(flat))) < 5 * np.sqrt(2 * LR / BETA) / np.sqrt(flat.size)


@pytest.mark.parametrize("perturbation", ["gaussian", "rademacher"])
def test_perturbation_std(perturbation):
  # ∇(½‖θ‖²) at θ = 0 + ε is ε itself; 10⁶ draws, 1% ≈ 14 standard errors of the std.
  params = {"a": jnp.zeros((1000, 1000))}
  sigma = 0.01
  opt_state = fsgld_optax.fsgld(LR, BETA, sigma=sigma, key=2).init(params)
  grad_fn = fsgld_optax.perturbed_value_and_grad(
    lambda p: 0.5 * jnp.sum(p["a"] ** 2), perturbation=perturbation
  )
  _, grads = jax.jit(grad_fn)(params, opt_state)
  np.testing.assert_allclose(jnp.std(grads["a"]), sigma, rtol=0.01)


@pytest.mark.parametrize("split_batch", [False, True])
@pytest.mark.parametrize("n", [1, 4, 16])
def test_gradient_noise_scales_as_sigma_over_sqrt_n(n, split_batch):
  # On U = mean_j ½‖θ − x_j‖² with x = 0 the gradient is θ + mean_i ε_i, whose std is σ/√n.
  # 2·10⁵ parameters: relative standard error of the std ≈ 0.16%; tolerance 1% ≈ 6 SE.
  sigma = 0.05
  params = jnp.zeros((200_000,))
  batch = jnp.zeros((16, 1))
  opt_state = fsgld_optax.fsgld(LR, BETA, sigma=sigma, key=n).init(params)

  def loss(p, x):
    return jnp.mean(0.5 * jnp.sum((p[None, :] - x) ** 2, axis=1))

  grad_fn = fsgld_optax.perturbed_value_and_grad(loss, n_perturbations=n, split_batch=split_batch)
  _, grads = jax.jit(grad_fn)(params, opt_state, batch)
  np.testing.assert_allclose(jnp.std(grads), sigma / np.sqrt(n), rtol=0.01)


def test_learning_rate_and_beta_schedules_are_used_at_step_k():
  params = {"w": jnp.zeros((4, 3))}
  zeros = jax.tree.map(jnp.zeros_like, params)
  lr_fn = lambda count: 0.1 / (1.0 + count)
  beta_fn = lambda count: 100.0 * (1.0 + count)
  tx = fsgld_optax.fsgld(lr_fn, beta_fn, key=1)
  state = tx.init(params)
  update = jax.jit(tx.update)
  for k in range(4):
    updates, new_state = update(zeros, state, params)
    xi = _randomness.standard_noise_like(
      _randomness.langevin_key(source_of(state).rng_key, source_of(state).count), params, "gaussian"
    )
    scale = np.sqrt(2 * lr_fn(k) / beta_fn(k))
    np.testing.assert_allclose(updates["w"], scale * xi["w"], rtol=1e-6)
    np.testing.assert_allclose(source_of(new_state).sigma, beta_fn(k + 1) ** (-1.1 / 4), rtol=1e-6)
    state = new_state


def test_weight_decay_without_params_is_a_clear_error():
  tx = fsgld_optax.fsgld(LR, BETA, weight_decay=WD, key=0)
  params = make_params()
  with pytest.raises(ValueError, match="params"):
    tx.update(params, tx.init(params))


def test_no_weight_decay_needs_no_params():
  tx = fsgld_optax.fsgld(LR, BETA, key=0)
  params = make_params()
  updates, _ = tx.update(params, tx.init(params))
  assert jax.tree.structure(updates) == jax.tree.structure(params)


@pytest.mark.parametrize(
  ("kwargs", "name"),
  [
    ({"beta": 0.0}, "beta"),
    ({"beta": -1.0}, "beta"),
    ({"beta": float("nan")}, "beta"),
    ({"learning_rate": -0.1}, "learning_rate"),
    ({"sigma": -0.1}, "sigma"),
    ({"eta": 0.0}, "eta"),
    ({"weight_decay": -1.0}, "weight_decay"),
    ({"langevin_noise": "uniform"}, "langevin_noise"),
    ({"key": "seed"}, "key"),
  ],
)
def test_bad_hyperparameters_name_the_argument(kwargs, name):
  args = {"learning_rate": LR, "beta": BETA, "key": 0, **kwargs}
  with pytest.raises((ValueError, TypeError), match=name):
    fsgld_optax.fsgld(**args)
