"""fSGHMC and SGHMC: exact reductions, a NumPy reference, the noise scale, the stationary law.

The update is SGHMC in the SGD-momentum form, v ← m v − λ_k (g + w θ) + sqrt(2(1−m)λ_k/β) ξ,
θ ← θ + v, fed the gradient at perturbed weights. The tests pin: the reductions to optax's
heavy-ball SGD (β = inf, σ = 0) and to fSGLD (m = 0); the schedule form (λ_k on the new
gradient only) against a NumPy reference with the same draws; the one-step noise scale; the
σ the wrapper perturbs with; and the stationary law exp(−β U_σ) on an asymmetric double well.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _family import full_grad, langevin_draw, loss_fn, make_params, trajectory

import fsgld_optax
from benchmarks import stationary
from fsgld_optax import _randomness

INF = float("inf")


def assert_trees_equal(a, b) -> None:
  jax.tree.map(np.testing.assert_array_equal, a, b)


# --- exact reductions ---------------------------------------------------------------------


@pytest.mark.parametrize(("momentum", "weight_decay"), [(0.9, 1e-2), (0.5, 0.0)])
@pytest.mark.parametrize("factory", ["fsghmc", "sghmc"])
def test_noiseless_unperturbed_is_optax_heavy_ball_sgd(factory, momentum, weight_decay):
  if factory == "fsghmc":
    tx = fsgld_optax.fsghmc(
      0.05, INF, momentum=momentum, sigma=0.0, weight_decay=weight_decay, key=0
    )
  else:
    tx = fsgld_optax.sghmc(0.05, INF, momentum=momentum, weight_decay=weight_decay, key=0)
  reference = optax.chain(
    optax.add_decayed_weights(weight_decay), optax.sgd(0.05, momentum=momentum)
  )
  actual, _ = trajectory(tx, 50)
  expected, _ = trajectory(reference, 50)
  # The two forms differ in the order of the float32 products (λ(m v + g) against
  # m (λ v) + λ g), a few ulps per step, which the contraction m < 1 keeps from growing.
  for a, e in zip(actual, expected, strict=True):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-6, atol=1e-7), a, e)
  # ... and the test can fail: the parameters moved far more than the tolerance.
  assert float(jnp.max(jnp.abs(expected[-1]["w"] - expected[0]["w"]))) > 0.1


def test_coupled_sigma_is_zero_at_infinite_beta():
  """β = inf with the default coupling gives σ = 0: fsghmc(λ, inf) is heavy-ball SGD too."""
  actual, _ = trajectory(fsgld_optax.fsghmc(0.05, INF, momentum=0.9, key=0), 20)
  expected, _ = trajectory(optax.sgd(0.05, momentum=0.9), 20)
  for a, e in zip(actual, expected, strict=True):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-6, atol=1e-7), a, e)


def test_zero_momentum_is_fsgld_bitwise():
  def run(tx):
    grad_fn = jax.jit(fsgld_optax.perturbed_value_and_grad(loss_fn, n_perturbations=2))
    update = jax.jit(tx.update)
    params, opt_state, out = make_params(), tx.init(make_params()), []
    for _ in range(5):
      _, grads = grad_fn(params, opt_state)
      updates, opt_state = update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      out.append(updates)
    return out

  common = dict(sigma=0.3, weight_decay=1e-2, key=3)
  assert_trees_equal(
    run(fsgld_optax.fsghmc(0.05, 1e3, momentum=0.0, **common)),
    run(fsgld_optax.fsgld(0.05, 1e3, **common)),
  )


LR_SCHEDULE = optax.piecewise_constant_schedule(0.08, {10: 0.1, 20: 0.5})


def numpy_velocity_form(
  params: dict, grads: list[dict], *, momentum: float, beta: float, weight_decay: float, key
) -> list[dict]:
  """v ← m v − λ_k (g_k + w θ_k) + sqrt(2(1−m)λ_k/β) ξ_k, θ ← θ + v, in float64 NumPy.

  ``grads[k]`` is the gradient at the library's θ_k (so the reference sees the same inputs);
  ξ_k is drawn as the library draws it, from ``langevin_key(key, k)``.
  """
  theta = {k: np.asarray(v, np.float64) for k, v in params.items()}
  velocity = {k: np.zeros_like(v) for k, v in theta.items()}
  updates = []
  for k, g in enumerate(grads):
    lr = float(LR_SCHEDULE(k))
    xi = langevin_draw(key, jnp.int32(k), params)
    for name in theta:
      velocity[name] = (
        momentum * velocity[name]
        - lr * (np.asarray(g[name], np.float64) + weight_decay * theta[name])
        + np.sqrt(2 * (1 - momentum) * lr / beta) * np.asarray(xi[name], np.float64)
      )
      theta[name] = theta[name] + velocity[name]
    updates.append(dict(velocity))
  return updates


def test_learning_rate_schedule_acts_on_the_new_gradient_only():
  momentum, beta, weight_decay, key = 0.9, 1e4, 1e-2, jax.random.key(11)
  tx = fsgld_optax.sghmc(LR_SCHEDULE, beta, momentum=momentum, weight_decay=weight_decay, key=key)
  params, updates = trajectory(tx, 30)
  grads = [full_grad(p) for p in params[:-1]]
  expected = numpy_velocity_form(
    params[0], grads, momentum=momentum, beta=beta, weight_decay=weight_decay, key=key
  )
  # float32 against float64, with the library's θ_k fed to both: rounding only. A velocity
  # entry carries the float32 rounding of every earlier term (m v, λ g, the noise), which can
  # be 10x larger than the entry itself; so rtol 1e-6, and atol 1e-6 relative to the largest
  # term of the leaf so far.
  scale = dict.fromkeys(expected[0], 0.0)
  for k, (a, e) in enumerate(zip(updates, expected, strict=True)):
    for name in e:
      lr_g = float(LR_SCHEDULE(k)) * np.asarray(grads[k][name])
      scale[name] = max(scale[name], float(np.max(np.abs(e[name]))), float(np.max(np.abs(lr_g))))
      np.testing.assert_allclose(a[name], e[name], rtol=1e-6, atol=1e-6 * scale[name])
  # optax's trace form θ ← θ − λ_k (m u + g) rescales the old velocity when λ drops (steps
  # 10 and 20). Without noise the two agree up to step 9 and differ from step 10 on.
  ours = trajectory(fsgld_optax.sghmc(LR_SCHEDULE, INF, momentum=momentum, key=0), 12)[1]
  theirs = trajectory(optax.sgd(LR_SCHEDULE, momentum=momentum), 12)[1]
  for k in range(10):
    np.testing.assert_allclose(ours[k]["w"], theirs[k]["w"], rtol=2e-6, atol=1e-8)
  assert np.max(np.abs(np.asarray(ours[10]["w"]) - np.asarray(theirs[10]["w"]))) > 1e-3


# --- noise and perturbations ----------------------------------------------------------------


@pytest.mark.parametrize("langevin_noise", ["gaussian", "binomial"])
def test_one_step_noise_scale(langevin_noise):
  lr, beta, momentum, size = 0.01, 100.0, 0.9, 100_000
  tx = fsgld_optax.fsghmc(
    lr, beta, momentum=momentum, sigma=0.0, key=5, langevin_noise=langevin_noise
  )
  params = jnp.zeros(size)
  # Zero gradient at θ = 0 and v₀ = 0: v₁ = sqrt(2(1−m)λ/β) ξ.
  updates, _ = jax.jit(tx.update)(jnp.zeros(size), tx.init(params), params)
  ratio = float(jnp.std(updates)) / np.sqrt(2 * (1 - momentum) * lr / beta)
  # The sample std of 1e5 unit draws has s.e. ≈ sqrt((κ−1)/4n) ≤ 0.16%: 1% is > 6 s.e.,
  # and a missing (1−m) factor (ratio 3.16) or a missing 2 (ratio 0.71) is far outside.
  assert abs(ratio - 1) < 0.01
  assert abs(float(jnp.mean(updates))) < 5 * np.sqrt(2 * (1 - momentum) * lr / beta / size)


def quadratic(params: jax.Array) -> jax.Array:
  return 0.5 * jnp.sum(params**2)


def expected_perturbation(opt_state, like) -> jax.Array:
  """σ_k ε_k as the wrapper draws it at step k (one perturbation)."""
  source = fsgld_optax.find_fsgld_state(opt_state)
  key = jax.random.split(_randomness.perturbation_key(source.rng_key, source.count), 1)[0]
  return source.sigma * _randomness.standard_noise_like(key, like, "gaussian")


@pytest.mark.parametrize(
  ("sigma", "beta", "sigma_at"),
  [
    (None, 1e4, lambda k: 1e4 ** (-1.1 / 4)),
    (0.2, 1e4, lambda k: 0.2),
    (None, lambda k: 1e3 * (1.0 + k), lambda k: (1e3 * (1.0 + k)) ** (-1.1 / 4)),
  ],
  ids=["coupled", "explicit", "coupled_to_a_beta_schedule"],
)
def test_wrapper_perturbs_with_fsghmc_sigma_inside_a_chain(sigma, beta, sigma_at):
  tx = optax.chain(
    optax.clip_by_global_norm(1.0),
    fsgld_optax.fsghmc(0.05, beta, momentum=0.9, sigma=sigma, eta=0.1, key=8),
  )
  params = jnp.zeros(4096)
  grad_fn = jax.jit(fsgld_optax.perturbed_value_and_grad(quadratic))
  update = jax.jit(tx.update)
  opt_state = tx.init(params)
  for k in range(3):
    source = fsgld_optax.find_fsgld_state(opt_state)
    assert int(source.count) == k
    np.testing.assert_allclose(float(source.sigma), sigma_at(k), rtol=1e-6)
    _, grads = grad_fn(params, opt_state)
    # ∇(½‖θ‖²) at θ + σ_k ε is θ + σ_k ε; σ_k ε has norm ≈ 64 σ_k, far from a missing ε.
    np.testing.assert_allclose(
      grads, params + expected_perturbation(opt_state, params), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(
      float(jnp.std(grads - params)), sigma_at(k), rtol=5 * np.sqrt(1 / (2 * 4096))
    )
    updates, opt_state = update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)


def test_perturbation_and_langevin_noise_are_independent():
  size, sigma, lr, beta, momentum = 65_536, 0.1, 0.05, 1e4, 0.9
  tx = fsgld_optax.fsghmc(lr, beta, momentum=momentum, sigma=sigma, key=2)
  params = jnp.zeros(size)
  grad_fn = jax.jit(fsgld_optax.perturbed_value_and_grad(quadratic))
  opt_state, draws = tx.init(params), []
  for _ in range(3):
    _, grads = grad_fn(params, opt_state)  # θ = 0: the gradient is σ ε
    # With zero gradients the velocity carries the Langevin noise alone.
    updates, opt_state = tx.update(jnp.zeros(size), opt_state, params)
    draws.append(np.asarray(grads) / sigma)
    draws.append(np.asarray(updates))
  # Step k's velocity is Σ_j m^{k−j} s ξ_j; the innovations are its differences.
  eps = draws[0::2]
  velocities = draws[1::2]
  xis = [velocities[0]] + [velocities[k] - momentum * velocities[k - 1] for k in (1, 2)]
  seen = eps + xis
  # ε_k, ξ_k independent within a step, fresh across steps: |corr| < 5/√n (5 s.e.).
  for i in range(len(seen)):
    for j in range(i):
      assert abs(np.corrcoef(seen[i], seen[j])[0, 1]) < 5 / np.sqrt(size)


# --- the stationary law ---------------------------------------------------------------------

# The asymmetric double well of benchmarks/stationary.py: equal depths, curvature 24 (sharp,
# θ = −1) and 6 (flat, θ = 1). At β = 1.5, exp(−βU) puts 0.650 of its mass in the flat basin,
# exp(−βU_σ) at σ = 0.3 puts 0.783 there (U_σ by Gauss–Hermite quadrature).
DW_BETA, DW_SIGMA, DW_LR, DW_MOMENTUM, DW_STEPS, DW_CHAINS = 1.5, 0.3, 2e-3, 0.9, 2_000, 10_000


def test_stationary_law_on_an_asymmetric_double_well_is_the_smoothed_gibbs_law():
  threshold = stationary.barrier_top()

  def chain(key):
    init_key, run_key = jax.random.split(key)
    tx = fsgld_optax.fsghmc(DW_LR, DW_BETA, momentum=DW_MOMENTUM, sigma=DW_SIGMA, key=run_key)
    theta0 = jax.random.uniform(init_key, (), minval=-1.5, maxval=1.5)
    # 16 antithetic perturbations per step: the gradient noise of the perturbations heats the
    # chain by λβ Var(g)/(2(1 − m)) relative to 1/β (see fsghmc's docstring); with one
    # perturbation that is ~40% in the sharp basin at this λ/(1 − m) = 0.02, with 16
    # antithetic ones below 1%.
    samples, _, _ = fsgld_optax.sample(
      stationary.potential,
      theta0,
      tx,
      num_samples=1,
      thinning=DW_STEPS,
      n_perturbations=16,
      antithetic=True,
    )
    return samples[0]

  keys = jax.random.split(jax.random.key(2026), DW_CHAINS)
  theta = np.asarray(jax.jit(jax.vmap(chain))(keys), np.float64)
  smoothed = stationary.exact_law(DW_BETA, DW_SIGMA, 64)
  plain = stationary.exact_law(DW_BETA, 0.0, 64)
  flat = float(np.mean(theta > threshold))
  # Binomial standard error of the flat-basin mass (0.0041 with 10⁴ chains). The chains
  # start uniform on [−1.5, 1.5] (flat mass 0.56), so they must cross the barrier to pass.
  # Measured with 1.6·10⁴ chains at these settings: 0.786 ± 0.003, a bias below 1 s.e.
  stderr = np.sqrt(flat * (1 - flat) / DW_CHAINS)
  assert abs(flat - smoothed.mass_above(threshold)) < 4 * stderr
  assert abs(flat - plain.mass_above(threshold)) > 20 * stderr
  # The mean position, against the exact means (trapezoid rule on the law's grid).
  mean = lambda law: float(np.trapezoid(law.grid * law.density, law.grid))
  mean_stderr = theta.std() / np.sqrt(DW_CHAINS)
  assert abs(theta.mean() - mean(smoothed)) < 4 * mean_stderr
  assert abs(theta.mean() - mean(plain)) > 20 * mean_stderr
