"""Cyclical SG-MCMC: per step, the step size, the phase (exploration or sampling), collection."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fsgld_optax._sampling import cyclical_cosine_schedule


class CyclicalSchedule(NamedTuple):
  """The schedules of cyclical SG-MCMC, all functions of the step index ``k``.

  ``k`` is the optimizer's step count before the step (the ``count`` at which the optimizer
  evaluates its ``learning_rate`` and ``beta`` schedules), so evaluate every field at the
  same ``k`` as the step it describes.

  Attributes:
    learning_rate: ``k -> λ_k``, the cyclical cosine step size.
    beta: ``k -> β_k``: ``inf`` in the exploration phase (no Langevin noise), the sampling
      β in the sampling phase. Pass it as the optimizer's ``beta``.
    is_sampling: ``k -> bool[]``, whether step ``k`` is in the sampling phase.
    should_collect: ``k -> bool[]``, whether the state *after* step ``k`` is a sample.
    cycle_length: L, the steps per cycle.
    exploration_steps: the first steps of every cycle that explore (β = inf).
    num_samples: the samples collected over ``total_steps`` steps.
  """

  learning_rate: optax.Schedule
  beta: optax.Schedule
  is_sampling: Callable[[jax.typing.ArrayLike], jax.Array]
  should_collect: Callable[[jax.typing.ArrayLike], jax.Array]
  cycle_length: int
  exploration_steps: int
  num_samples: int


def _positive_int(name: str, value: object) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
  return value


def cyclical_schedule(
  init_value: float,
  total_steps: int,
  num_cycles: int,
  *,
  beta: optax.ScalarOrSchedule,
  exploration_fraction: float = 0.8,
  samples_per_cycle: int = 1,
  thinning: int = 1,
) -> CyclicalSchedule:
  r"""Cyclical SG-MCMC phases for any sampler of this package, without recompiling.

  With K = ``total_steps``, M = ``num_cycles``, cycle length :math:`L = K/M` and the
  position :math:`p_k = k \bmod L` of step k in its cycle:

  .. math::

    \lambda_k = \frac{\lambda_0}{2}\Bigl(\cos\frac{\pi p_k}{L} + 1\Bigr), \qquad
    \beta_k = \begin{cases} \infty & p_k < \lceil r L \rceil \ \text{(exploration)} \\
      \beta & \text{otherwise (sampling)} \end{cases}

  with r = ``exploration_fraction`` (Zhang et al.'s proportion of exploration). β = ∞
  switches the Langevin noise off inside the optimizer, so one compiled step serves both
  phases, and the noise of a sampling step is drawn from the same ``(key, k)`` as in a run at
  constant β (the randomness contract is unchanged). What the exploration phase is depends
  on the optimizer: :func:`~fsgld_optax.fsgld` with coupled σ (``sigma=None``) gives σ = 0,
  i.e. SGD; with an explicit σ, random weight perturbation (RWP); ``fsghmc`` gives
  SGD with momentum; ``psgld`` RMSprop-preconditioned SGD.

  Samples: the state after step k is collected when k is in the sampling phase and
  :math:`d_k = L - 1 - p_k` (steps to the end of the cycle) is a multiple of ``thinning``
  below ``samples_per_cycle · thinning``: the last step of every cycle and every
  ``thinning``-th step before it, ``samples_per_cycle`` per cycle. The paper's Bayesian
  setting (4 cycles of 50 epochs, 16 samples) is ``num_cycles=4, samples_per_cycle=4,
  thinning=steps_per_epoch``. Steps past ``total_steps`` repeat the cycles.

  Args:
    init_value: λ₀, the step size at the start of each cycle.
    total_steps: K, a multiple of ``num_cycles``.
    num_cycles: M ≥ 1.
    beta: the inverse temperature of the sampling phase (a scalar or a schedule), e.g.
      :func:`posterior_beta`.
    exploration_fraction: r in [0, 1): the fraction of each cycle without Langevin noise.
    samples_per_cycle: samples kept per cycle, ≥ 1.
    thinning: steps between the samples of a cycle, ≥ 1.

  Returns:
    A :class:`CyclicalSchedule`.

  Raises:
    ValueError: for arguments out of range, or samples that do not fit in the sampling phase.

  Examples:
    >>> import jax.numpy as jnp, optax, fsgld_optax
    >>> from fsgld_optax import bayes
    >>> schedule = bayes.cyclical_schedule(0.1, 100, 4, beta=1e4, samples_per_cycle=2)
    >>> tx = fsgld_optax.fsgld(schedule.learning_rate, schedule.beta, key=0)
    >>> [k for k in range(100) if schedule.should_collect(k)]
    [23, 24, 48, 49, 73, 74, 98, 99]
    >>> print(schedule.beta(0), schedule.beta(24), schedule.exploration_steps)
    inf 10000.0 20

  References:
    Zhang, Li, Zhang, Chen and Wilson, *Cyclical Stochastic Gradient MCMC for Bayesian Deep
    Learning*, ICLR 2020. https://arxiv.org/abs/1902.03932
  """
  _positive_int("num_cycles", num_cycles)
  _positive_int("total_steps", total_steps)
  _positive_int("samples_per_cycle", samples_per_cycle)
  _positive_int("thinning", thinning)
  if total_steps % num_cycles:
    raise ValueError(
      f"total_steps ({total_steps}) must be a multiple of num_cycles ({num_cycles}), so that "
      "every cycle ends on a sample."
    )
  r = float(exploration_fraction)
  if not 0.0 <= r < 1.0:
    raise ValueError(f"exploration_fraction must be in [0, 1), got {exploration_fraction!r}.")
  if not callable(beta):
    b = float(beta)  # pyright: ignore[reportArgumentType]
    if math.isnan(b) or b <= 0:
      raise ValueError(f"beta must be > 0, got {beta!r}.")
  length = total_steps // num_cycles
  # ⌈r L⌉, rounding r L first so that e.g. 0.8 * 25 counts as 20, not 20.000000000000004.
  explore = math.ceil(round(r * length, 9))
  sampling_steps = length - explore
  span = (samples_per_cycle - 1) * thinning + 1
  if sampling_steps < span:
    raise ValueError(
      f"samples_per_cycle={samples_per_cycle} with thinning={thinning} needs {span} sampling "
      f"steps per cycle, but a cycle of {length} steps with exploration_fraction={r} has "
      f"{sampling_steps}."
    )
  learning_rate = cyclical_cosine_schedule(init_value, total_steps, num_cycles)

  def position(k: jax.typing.ArrayLike) -> jax.Array:
    return jnp.mod(jnp.asarray(k), length)

  def is_sampling(k: jax.typing.ArrayLike) -> jax.Array:
    return position(k) >= explore

  def beta_schedule(k: jax.typing.ArrayLike) -> jax.Array:
    beta_k = jnp.asarray(beta(k) if callable(beta) else beta, jnp.result_type(float))
    return jnp.where(is_sampling(k), beta_k, jnp.inf)

  def should_collect(k: jax.typing.ArrayLike) -> jax.Array:
    to_end = length - 1 - position(k)
    return is_sampling(k) & (to_end % thinning == 0) & (to_end // thinning < samples_per_cycle)

  return CyclicalSchedule(
    learning_rate=learning_rate,
    beta=beta_schedule,
    is_sampling=is_sampling,
    should_collect=should_collect,
    cycle_length=length,
    exploration_steps=explore,
    num_samples=num_cycles * samples_per_cycle,
  )
