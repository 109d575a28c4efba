"""Shared pieces of the tests of the momentum and preconditioned members of the family."""

import jax
import jax.numpy as jnp
import optax

from fsgld_optax import _randomness


def make_params() -> dict[str, jax.Array]:
  return {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.full((4,), 0.7)}


def loss_fn(params: dict[str, jax.Array]) -> jax.Array:
  """A bounded non-quadratic loss, so that the gradient changes along the trajectory."""
  return jnp.sum(jnp.tanh(params["w"] - 0.2) ** 2) + jnp.sum(jnp.log(jnp.cosh(params["b"] - 0.5)))


full_grad = jax.jit(jax.grad(loss_fn))
# ξ_k as the library draws it, from ``langevin_key(key, k)``.
langevin_draw = jax.jit(
  lambda key, k, like: _randomness.standard_noise_like(
    _randomness.langevin_key(key, k), like, "gaussian"
  )
)


def trajectory(tx: optax.GradientTransformation, steps: int) -> tuple[list, list]:
  """Parameters and updates along ``steps`` full-batch steps at the unperturbed gradient."""

  @jax.jit
  def step(params, opt_state):
    updates, opt_state = tx.update(jax.grad(loss_fn)(params), opt_state, params)
    return optax.apply_updates(params, updates), opt_state, updates

  params, opt_state = make_params(), tx.init(make_params())
  all_params, all_updates = [params], []
  for _ in range(steps):
    params, opt_state, updates = step(params, opt_state)
    all_params.append(params)
    all_updates.append(updates)
  return all_params, all_updates
