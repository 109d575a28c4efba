"""R-hat and ESS on function-space draws (BlackJAX's estimators behind a checked interface)."""

from __future__ import annotations

import blackjax.diagnostics
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fsgld_optax import bayes


def _ar1(key, chains: int, draws: int, rho: float, shift=None) -> jax.Array:
  """AR(1) chains with unit stationary variance, started at stationarity."""
  noise = jax.random.normal(key, (draws, chains)) * jnp.sqrt(1 - rho**2)

  def step(x, e):
    x = rho * x + e
    return x, x

  x0 = jax.random.normal(jax.random.fold_in(key, 1), (chains,))
  _, xs = jax.lax.scan(step, x0, noise)
  out = xs.T
  return out if shift is None else out + shift[:, None]


def test_rhat_near_one_for_agreeing_chains_and_large_for_disagreeing_ones() -> None:
  key = jax.random.key(0)
  good = _ar1(key, 4, 400, 0.5)
  assert float(bayes.rhat(good)) < 1.02
  bad = _ar1(key, 4, 400, 0.5, shift=jnp.array([0.0, 0.0, 0.0, 3.0]))
  assert float(bayes.rhat(bad)) > 1.3


def test_ess_follows_the_autocorrelation() -> None:
  # AR(1) with ρ: the bulk ESS ≈ N (1 - ρ)/(1 + ρ). The estimate is noisy (its relative error
  # is of order 10-20% here), so the test checks a factor of 2 around the exact value, far
  # apart for the two values of ρ (iid: 1,600; ρ = 0.9: 84). The tail ESS (of quantile
  # indicators, whose autocorrelation is weaker than ρ) only has to drop several-fold.
  key = jax.random.key(1)
  tail = {}
  for rho in (0.0, 0.9):
    draws = _ar1(key, 4, 400, rho)
    exact = 1600 * (1 - rho) / (1 + rho)
    ess = float(bayes.effective_sample_size(draws))
    assert exact / 2 < ess < exact * 2, (rho, ess)
    tail[rho] = float(bayes.effective_sample_size(draws, kind="tail"))
  assert tail[0.9] < tail[0.0] / 3, tail


def test_axes_and_extra_dimensions_are_blackjax_with_standard_axes() -> None:
  # Function-space draws: (samples, inputs, chains), e.g. the probability of the true class.
  draws = jax.random.uniform(jax.random.key(2), (20, 5, 3))
  standard = jnp.moveaxis(draws, (2, 0), (0, 1))  # (chains, samples, inputs)
  got = bayes.rhat(draws, chain_axis=2, sample_axis=0)
  assert got.shape == (5,)
  np.testing.assert_array_equal(got, bayes.rhat(standard))
  ess = bayes.effective_sample_size(draws, chain_axis=-1, sample_axis=0)
  np.testing.assert_array_equal(ess, bayes.effective_sample_size(standard))
  # BlackJAX's own functions, jitted as the wrapper does, on the standard axes.
  with jax.numpy_rank_promotion("allow"):
    expected = jax.jit(blackjax.diagnostics.rhat)(standard)
    expected_ess = jax.jit(blackjax.diagnostics.ess_bulk)(standard)
  np.testing.assert_array_equal(got, expected)
  np.testing.assert_array_equal(ess, expected_ess)


@pytest.mark.parametrize("fn", [bayes.rhat, bayes.effective_sample_size])
def test_bad_draws(fn) -> None:
  with pytest.raises(ValueError, match="needs a chain axis and a sample axis"):
    fn(jnp.zeros(10))
  with pytest.raises(ValueError, match="at least 4 draws per chain"):
    fn(jnp.zeros((4, 3)))
  with pytest.raises(ValueError, match="chain_axis and sample_axis must differ"):
    fn(jnp.zeros((4, 10)), chain_axis=1, sample_axis=-1)
  with pytest.raises(ValueError, match="sample_axis=2 is out of range"):
    fn(jnp.zeros((4, 10)), sample_axis=2)


def test_bad_kind() -> None:
  with pytest.raises(ValueError, match="kind must be 'bulk' or 'tail'"):
    bayes.effective_sample_size(jnp.zeros((2, 8)), kind="basic")  # pyright: ignore[reportArgumentType]
