"""Chains and cyclical step sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fsgld_optax


def test_sample_returns_thinned_states_of_the_chain():
  loss = lambda x: 0.5 * jnp.sum(x**2)
  tx = fsgld_optax.fsgld(1e-2, 10.0, sigma=0.3, key=1)
  samples, final, opt_state = fsgld_optax.sample(
    loss, jnp.ones(3), tx, num_samples=4, thinning=3, burn_in=2
  )
  assert samples.shape == (4, 3)
  assert int(fsgld_optax.find_fsgld_state(opt_state).count) == 2 + 4 * 3
  np.testing.assert_array_equal(samples[-1], final)
  # The same run by hand: the kept states are steps 5, 8, 11 and 14.
  grad_fn = fsgld_optax.perturbed_value_and_grad(loss)
  params, state, states = jnp.ones(3), tx.init(jnp.ones(3)), []
  for _ in range(14):
    _, g = grad_fn(params, state)
    u, state = tx.update(g, state, params)
    params = params + u
    states.append(params)
  np.testing.assert_allclose(samples, jnp.stack(states[4::3]), rtol=1e-6)


def test_sample_matches_a_gaussian_posterior_under_vmap():
  # U = ½ x², σ = 0 (SGLD), β = 4: the law is N(0, 1/4); 4000 chains' std has a relative
  # standard error of 1/√(2·4000) ≈ 1.1%; discretisation bias at λ = 1e-2 is ≈ λ/4 < 0.3%.
  def chain(key):
    tx = fsgld_optax.sgld(1e-2, 4.0, key=key)
    samples, _, _ = fsgld_optax.sample(
      lambda x: 0.5 * x**2, jnp.zeros(()), tx, num_samples=1, burn_in=600
    )
    return samples[0]

  x = jax.jit(jax.vmap(chain))(jax.random.split(jax.random.key(0), 4000))
  np.testing.assert_allclose(jnp.std(x), 0.5, rtol=0.05)


@pytest.mark.parametrize(
  ("kwargs", "name"),
  [
    ({"num_samples": 0}, "num_samples"),
    ({"thinning": 0}, "thinning"),
    ({"burn_in": -1}, "burn_in"),
  ],
)
def test_sample_rejects_bad_counts(kwargs, name):
  tx = fsgld_optax.sgld(1e-2, 1.0, key=0)
  args = {"num_samples": 2, **kwargs}
  with pytest.raises(ValueError, match=name):
    fsgld_optax.sample(lambda x: jnp.sum(x**2), jnp.zeros(2), tx, **args)


def test_cyclical_cosine_schedule():
  schedule = fsgld_optax.cyclical_cosine_schedule(0.2, total_steps=12, num_cycles=3)
  values = np.asarray([schedule(k) for k in range(12)])
  expected = [0.1 * (np.cos(np.pi * (k % 4) / 4) + 1) for k in range(12)]
  np.testing.assert_allclose(values, expected, rtol=1e-6)
  with pytest.raises(ValueError, match="num_cycles"):
    fsgld_optax.cyclical_cosine_schedule(0.1, total_steps=10, num_cycles=0)
