"""The Langevin noise: the one piece of the family that makes an optimizer a sampler."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fsgld_optax import _randomness, _validation
from fsgld_optax._randomness import LangevinDistribution
from fsgld_optax._source import check_params, check_updates


class LangevinState(NamedTuple):
  """State of :func:`add_langevin_noise`.

  Attributes:
    count: ``int32[]``, the index ``k`` of the next step (in step with the source of
      perturbations of the same optimizer).
    rng_key: typed PRNG key; step ``k``'s noise ξ_k derives from ``(rng_key, k)`` on a stream
      independent of the perturbations'.
  """

  count: jax.Array
  rng_key: jax.Array


def langevin_noise(
  rng_key: jax.Array, count: jax.Array, like: Any, distribution: LangevinDistribution
) -> Any:
  """Step ``count``'s standard Langevin noise ξ, one draw per floating leaf of ``like``."""
  key = _randomness.langevin_key(rng_key, count)
  return _randomness.standard_noise_like(key, like, distribution)


def check_beta(beta: Any) -> bool:
  """Checks β (> 0, a scalar or a schedule); returns whether it is concretely ``inf``."""
  _validation.check_scalar("beta", beta, lower=0.0, inclusive=False, allow_schedule=True)
  return _validation.concrete(beta) == math.inf


def add_langevin_noise(
  learning_rate: optax.ScalarOrSchedule,
  beta: optax.ScalarOrSchedule,
  *,
  key: int | jax.Array,
  friction: float = 1.0,
  distribution: LangevinDistribution = "gaussian",
) -> optax.GradientTransformationExtraArgs:
  r"""Adds the Langevin noise of step ``k`` to the updates.

  .. math::

    u_k \leftarrow u_k + \sqrt{2 \gamma \lambda_k / \beta_k}\; \xi_k,
    \qquad \xi_k \sim \mathcal{N}(0, I),

  with friction γ (1 for SGLD; 1 − m for SGHMC in its SGD-momentum form). Put it after the
  step ``-λ_k g`` of the chain (``optax.scale_by_learning_rate``): it is what turns that
  optimizer into a sampler of :math:`\exp(-\beta U)`. ``beta=inf``, or a β schedule that
  is ``inf`` at step ``k``, adds nothing at that step, with no recompilation.
  Complex parameter leaves are rejected at ``init`` (the noise is defined per real
  coordinate: split them into real and imaginary parts).

  Args:
    learning_rate: step size λ ≥ 0, a scalar or a schedule (the same as the step's).
    beta: inverse temperature β > 0, a scalar or a schedule; ``inf`` for no noise.
    key: int seed or typed ``jax.random.key``. Use the key of the optimizer's source of
      perturbations: ξ is drawn on a stream of its own, independent of ε.
    friction: γ in (0, 1].
    distribution: ``"gaussian"`` or ``"binomial"`` (see :func:`~fsgld_optax.fsgld`).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`LangevinState`.

  Examples:
    >>> import jax.numpy as jnp, optax, fsgld_optax
    >>> tx = optax.chain(optax.sgd(0.1), fsgld_optax.add_langevin_noise(0.1, 1e4, key=0))
    >>> updates, _ = tx.update(jnp.zeros(3), tx.init(jnp.zeros(3)))
    >>> print(bool(jnp.all(updates != 0)))
    True

  References:
    Welling and Teh, *Bayesian Learning via Stochastic Gradient Langevin Dynamics*,
    ICML 2011.
  """
  _validation.check_scalar(
    "learning_rate", learning_rate, lower=0.0, inclusive=True, allow_inf=False, allow_schedule=True
  )
  noiseless = check_beta(beta)
  _validation.check_scalar("friction", friction, lower=0.0, inclusive=False, allow_inf=False)
  if (x := _validation.concrete(friction)) is not None and x > 1:
    raise ValueError(f"friction must be in (0, 1], got {x}.")
  # Named both ways: fsgld, fsghmc, ... pass their langevin_noise argument on as distribution.
  _randomness.check_distribution(
    "distribution (langevin_noise)", distribution, LangevinDistribution
  )
  rng_key = _randomness.canonical_key(key)
  unit_friction = _validation.concrete(friction) == 1.0

  def init_fn(params: optax.Params) -> LangevinState:
    check_params(params, "add_langevin_noise")
    return LangevinState(jnp.zeros([], jnp.int32), _randomness.fresh_key(rng_key))

  def update_fn(
    updates: optax.Updates,
    state: LangevinState,
    params: optax.Params | None = None,
    **extra_args: Any,
  ) -> tuple[optax.Updates, LangevinState]:
    del extra_args
    check_updates(updates, params, "add_langevin_noise")
    if not noiseless:
      lr = _validation.at(learning_rate, state.count)
      _validation.check_schedule_value(
        "learning_rate", learning_rate, lr, lower=0.0, inclusive=True, allow_inf=False
      )
      beta_k = _validation.at(beta, state.count)
      _validation.check_schedule_value(
        "beta", beta, beta_k, lower=0.0, inclusive=False, allow_inf=True
      )
      scale = jnp.sqrt((2.0 if unit_friction else 2.0 * friction) * lr / beta_k)
      xi = langevin_noise(state.rng_key, state.count, updates, distribution)
      updates = jax.tree.map(
        lambda u, x: (u + scale * x).astype(u.dtype) if _randomness.is_inexact(u) else u,
        updates,
        xi,
      )
    count, rng_key = _randomness.next_step(state.count, state.rng_key)
    return updates, LangevinState(count, rng_key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)  # pyright: ignore[reportArgumentType]
