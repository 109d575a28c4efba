"""Cyclical SG-MCMC phases (fsgld_optax.bayes.cyclical_schedule) and the temperature convention."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fsgld_optax
from fsgld_optax import bayes

KEY = 3
BETA = 1e3


def test_schedule_values() -> None:
  s = bayes.cyclical_schedule(0.1, 100, 4, beta=BETA, exploration_fraction=0.8)
  assert (s.cycle_length, s.exploration_steps, s.num_samples) == (25, 20, 4)
  reference_lr = fsgld_optax.cyclical_cosine_schedule(0.1, 100, 4)
  for k in range(120):
    p = k % 25
    assert float(s.learning_rate(k)) == float(reference_lr(k))
    assert bool(s.is_sampling(k)) == (p >= 20)
    assert float(s.beta(k)) == (np.float32(BETA) if p >= 20 else math.inf)
    assert bool(s.should_collect(k)) == (p == 24)


def test_collection_steps_with_thinning() -> None:
  s = bayes.cyclical_schedule(
    1.0, 60, 2, beta=BETA, exploration_fraction=0.5, samples_per_cycle=3, thinning=4
  )
  collected = [k for k in range(60) if s.should_collect(k)]
  assert collected == [21, 25, 29, 51, 55, 59]
  assert s.num_samples == len(collected)
  assert all(s.is_sampling(k) for k in collected)
  # Vectorised over steps and under jit: the same answers.
  steps = jnp.arange(60)
  np.testing.assert_array_equal(np.flatnonzero(jax.jit(s.should_collect)(steps)), collected)


def test_no_exploration_and_a_beta_schedule() -> None:
  s = bayes.cyclical_schedule(0.1, 10, 2, beta=lambda k: 10.0 * (k + 1), exploration_fraction=0)
  assert s.exploration_steps == 0
  np.testing.assert_allclose([s.beta(k) for k in range(10)], 10.0 * np.arange(1, 11))


@pytest.mark.parametrize(
  ("kwargs", "match"),
  [
    ({"total_steps": 10, "num_cycles": 3}, "multiple of num_cycles"),
    ({"num_cycles": 0}, "num_cycles must be an int >= 1"),
    ({"total_steps": 0}, "total_steps must be an int >= 1"),
    ({"exploration_fraction": 1.0}, r"exploration_fraction must be in \[0, 1\)"),
    ({"exploration_fraction": -0.1}, r"exploration_fraction must be in \[0, 1\)"),
    ({"samples_per_cycle": 0}, "samples_per_cycle must be an int >= 1"),
    ({"thinning": 1.5}, "thinning must be an int >= 1"),
    ({"samples_per_cycle": 3, "thinning": 3}, "needs 7 sampling steps per cycle"),
    ({"beta": 0.0}, "beta must be > 0"),
    ({"beta": float("nan")}, "beta must be > 0"),
  ],
)
def test_bad_arguments(kwargs, match) -> None:
  args = {"init_value": 0.1, "total_steps": 100, "num_cycles": 4, "beta": 1.0} | kwargs
  with pytest.raises(ValueError, match=match):
    bayes.cyclical_schedule(**args)


# ------------------------------------------------------------------------------ the phase switch


def _loss(params, x, y):
  hidden = jnp.tanh(x @ params["w"] + params["b"][None])
  return jnp.mean((hidden @ params["v"] - y) ** 2)


def _problem():
  rng = np.random.default_rng(0)
  params = {
    "w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
    "b": jnp.zeros(4),
    "v": jnp.asarray(rng.normal(size=4), jnp.float32),
  }
  batches = [
    (
      jnp.asarray(rng.normal(size=(8, 3)), jnp.float32),
      jnp.asarray(rng.normal(size=8), jnp.float32),
    )
    for _ in range(4)
  ]
  return params, batches


SAMPLERS = {
  # Coupled σ: the exploration phase is SGD (σ = β^{-(1+η)/4} = 0 at β = inf).
  "fsgld": lambda lr, beta: fsgld_optax.fsgld(lr, beta, weight_decay=1e-3, key=KEY),
  # Explicit σ: the exploration phase is RWP.
  "fsgld_explicit_sigma": lambda lr, beta: fsgld_optax.fsgld(lr, beta, sigma=0.05, key=KEY),
  "fsghmc": lambda lr, beta: fsgld_optax.fsghmc(lr, beta, momentum=0.9, key=KEY),
  "psgld": lambda lr, beta: fsgld_optax.psgld(lr, beta, key=KEY),
  "preconditioned_fsgld": lambda lr, beta: fsgld_optax.preconditioned_fsgld(lr, beta, key=KEY),
}


def _assert_trees_equal(a, b) -> None:
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_phase_switch_is_exact(name: str) -> None:
  """Exploration steps carry no Langevin noise, sampling steps exactly the constant-β noise.

  At every step, from the same state and gradient, the scheduled optimizer's update equals
  bitwise that of the same optimizer at β = inf (exploration) or at the constant sampling β
  (sampling); the first exploration phase equals the noiseless run bitwise from the start;
  and one compiled step serves both phases. The constant-β reference gets β at run time:
  given a compile-time constant, XLA may turn the division by β into a multiplication by
  its reciprocal, which can differ in the last bit.
  """
  make = SAMPLERS[name]
  schedule = bayes.cyclical_schedule(0.05, 24, 2, beta=BETA, exploration_fraction=0.5)
  scheduled = make(schedule.learning_rate, schedule.beta)
  noiseless = make(schedule.learning_rate, math.inf)
  grad_fn = jax.jit(fsgld_optax.perturbed_value_and_grad(_loss))
  traces = []

  def update(tx):
    def fn(grads, state, params):
      traces.append(tx)
      return tx.update(grads, state, params)

    return jax.jit(fn)

  step, step_noiseless = update(scheduled), update(noiseless)

  @jax.jit
  def step_constant(grads, state, params, beta):
    return make(schedule.learning_rate, beta).update(grads, state, params)

  params, batches = _problem()
  state = scheduled.init(params)
  free_params, free_state = params, noiseless.init(params)
  for k in range(24):
    x, y = batches[k % 4]
    _, grads = grad_fn(params, state, x, y)
    updates, new_state = step(grads, state, params)
    if schedule.is_sampling(k):
      _assert_trees_equal(updates, step_constant(grads, state, params, jnp.float32(BETA))[0])
      without_noise = step_noiseless(grads, state, params)[0]
      assert not all(jax.tree.leaves(jax.tree.map(jnp.array_equal, updates, without_noise)))
    else:
      _assert_trees_equal(updates, step_noiseless(grads, state, params)[0])
    params, state = optax.apply_updates(params, updates), new_state
    if k < schedule.exploration_steps:  # the first exploration phase: the noiseless run
      _, free_grads = grad_fn(free_params, free_state, x, y)
      free_updates, free_state = step_noiseless(free_grads, free_state, free_params)
      free_params = optax.apply_updates(free_params, free_updates)
      _assert_trees_equal(params, free_params)
  assert fsgld_optax.find_fsgld_state(state).count == 24
  assert traces.count(scheduled) == 1  # no recompilation when the phase switches


# ------------------------------------------------------------------------------ temperature


def test_posterior_beta() -> None:
  assert bayes.posterior_beta(100) == 100.0
  assert bayes.posterior_beta(100, temperature=0.25) == 400.0
  for bad in (0, -1, 2.0, True):
    with pytest.raises(ValueError, match="num_data must be a positive int"):
      bayes.posterior_beta(bad)  # pyright: ignore[reportArgumentType]
  for bad in (0.0, -1.0, math.inf, math.nan, "x"):
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
      bayes.posterior_beta(10, temperature=bad)  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("temperature", [1.0, 0.1])
def test_beta_n_over_t_samples_the_tempered_posterior(temperature: float) -> None:
  """SGLD on a mean loss at β = N/T, weight decay w = α/N, samples exp(-U/T).

  Gaussian mean model: y_i ~ N(θ, 1), prior θ ~ N(0, 1/α). The posterior is Gaussian with
  precision (N + α)/T and mean Σy/(N + α). The chain at step size λ on the mean loss (curvature
  h = 1 + w) has the exact stationary variance T/((N + α)(1 - λh/2)), which the test uses, so
  only Monte-Carlo error remains: 4000 independent chains, tolerances of 5 standard errors
  (mean: sd/√n; variance: var·√(2/(n-1))).
  """
  rng = np.random.default_rng(1)
  n_data, alpha, lr = 50, 4.0, 0.05
  y = jnp.asarray(rng.normal(1.5, 1.0, n_data), jnp.float32)
  w = alpha / n_data
  beta = bayes.posterior_beta(n_data, temperature)

  def chain(key):
    tx = fsgld_optax.sgld(lr, beta, weight_decay=w, key=key)
    loss = lambda theta: 0.5 * jnp.mean((y - theta) ** 2)
    samples, _, _ = fsgld_optax.sample(loss, jnp.zeros(()), tx, num_samples=1, burn_in=400)
    return samples[0]

  n = 4000
  draws = np.asarray(jax.jit(jax.vmap(chain))(jax.random.split(jax.random.key(0), n)), np.float64)
  mean = float(np.sum(y)) / (n_data + alpha)
  h = 1 + w
  var = temperature / ((n_data + alpha) * (1 - lr * h / 2))
  assert abs(draws.mean() - mean) < 5 * math.sqrt(var / n)
  assert abs(draws.var(ddof=1) - var) < 5 * var * math.sqrt(2 / (n - 1))
