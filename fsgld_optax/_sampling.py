"""Sampling with fSGLD: running a chain and collecting thinned samples, cyclical step sizes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from fsgld_optax import _validation
from fsgld_optax._perturb import perturbed_value_and_grad


def sample(
  loss_fn: Callable[[Any], jax.Array],
  params: Any,
  tx: optax.GradientTransformation,
  *,
  num_samples: int,
  thinning: int = 1,
  burn_in: int = 0,
  **wrapper_kwargs: Any,
) -> tuple[Any, Any, optax.OptState]:
  r"""Runs one fSGLD chain on a full-batch loss and collects thinned samples.

  The chain takes ``burn_in + num_samples * thinning`` steps of

  .. math::

    \theta_{k+1} = \theta_k - \lambda_k (g_k + w\,\theta_k) + \sqrt{2\lambda_k/\beta_k}\,\xi_k,
    \qquad g_k = \tfrac{1}{n}\textstyle\sum_i \nabla U(\theta_k + \varepsilon_{k,i}),

  with ``jax.lax.scan`` and keeps every ``thinning``-th state after ``burn_in``. Its samples
  follow approximately :math:`\exp(-\beta\, U_\sigma)`, the Gibbs law of the smoothed loss.
  For many independent chains, ``jax.vmap`` a function that builds ``tx`` from a key.

  Args:
    loss_fn: the potential ``U(params) -> scalar`` (e.g. a negative log posterior, or a
      mean loss closed over a dataset; note the temperature is then ``1/β`` per unit loss).
    params: the initial state of the chain.
    tx: an optimizer containing :func:`fsgld` (or :func:`sgld`).
    num_samples: the number of samples to return.
    thinning: keep one state in every ``thinning`` steps.
    burn_in: steps taken before the first kept state.
    **wrapper_kwargs: passed to :func:`perturbed_value_and_grad` (``n_perturbations``,
      ``antithetic``, ``perturbation``).

  Returns:
    ``(samples, params, opt_state)``: the samples stacked along a new leading axis of size
    ``num_samples``, and the final state of the chain.

  Raises:
    TypeError: if ``loss_fn`` is not callable or ``tx`` is not a gradient transformation.
    ValueError: for counts that are not ints (booleans included) in range, and for bad
      ``wrapper_kwargs`` (see :func:`perturbed_value_and_grad`).

  Examples:
    >>> import jax, jax.numpy as jnp, fsgld_optax
    >>> tx = fsgld_optax.fsgld(learning_rate=1e-2, beta=1.0, sigma=0.5, key=0)
    >>> samples, _, _ = fsgld_optax.sample(
    ...     lambda x: 0.5 * jnp.sum(x**2), jnp.zeros(2), tx, num_samples=100, thinning=5)
    >>> print(samples.shape)
    (100, 2)

  References:
    Bruno et al., *Flatness-Aware Stochastic Gradient Langevin Dynamics*, ICML 2026.
    https://arxiv.org/abs/2510.02174
  """
  if not callable(loss_fn):
    raise TypeError(f"loss_fn must be a callable U(params) -> scalar, got {loss_fn!r}.")
  if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
    raise TypeError(f"tx must be an optax.GradientTransformation, got {tx!r}.")
  _validation.check_int("num_samples", num_samples, lower=1)
  _validation.check_int("thinning", thinning, lower=1)
  _validation.check_int("burn_in", burn_in, lower=0)
  num_samples, thinning, burn_in = int(num_samples), int(thinning), int(burn_in)
  grad_fn = perturbed_value_and_grad(loss_fn, **wrapper_kwargs)

  def step(carry: tuple[Any, Any], _: None) -> tuple[tuple[Any, Any], None]:
    params, opt_state = carry
    _, grads = grad_fn(params, opt_state)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  def run(carry: tuple[Any, Any], length: int) -> tuple[Any, Any]:
    return jax.lax.scan(step, carry, length=length)[0] if length else carry

  def kept(carry: tuple[Any, Any], _: None) -> tuple[tuple[Any, Any], Any]:
    carry = run(carry, thinning)
    return carry, carry[0]

  carry = run((params, tx.init(params)), burn_in)
  (params, opt_state), samples = jax.lax.scan(kept, carry, length=num_samples)
  return samples, params, opt_state


def cyclical_cosine_schedule(
  init_value: float, total_steps: int, num_cycles: int
) -> optax.Schedule:
  r"""The cyclical cosine step size of cyclical SG-MCMC.

  .. math::

    \lambda_k = \frac{\lambda_0}{2}\left(\cos\frac{\pi \bmod(k, \lceil K/M \rceil)}
      {\lceil K/M \rceil} + 1\right),

  with K = ``total_steps`` and M = ``num_cycles``: each cycle starts large (exploration) and
  ends near 0 (sampling); collect samples at the end of each cycle, as in the paper's
  Bayesian experiments (4 cycles).

  Args:
    init_value: λ₀ ≥ 0, a finite real number: the step size at the start of each cycle.
    total_steps: K ≥ M, an int: the length of the run.
    num_cycles: M ≥ 1, an int: the number of cycles.

  Returns:
    An ``optax.Schedule`` with values in the default float dtype.

  Raises:
    ValueError: naming the argument, for an ``init_value`` that is not a finite real number
      ≥ 0 (booleans, strings, arrays, schedules included) or that overflows the default
      float dtype, and for counts that are not ints (booleans included) in range.

  Examples:
    >>> import fsgld_optax
    >>> schedule = fsgld_optax.cyclical_cosine_schedule(0.1, total_steps=100, num_cycles=4)
    >>> print(f"{schedule(0):.3f} {schedule(24):.4f} {schedule(25):.3f}")
    0.100 0.0004 0.100

  References:
    Zhang et al., *Cyclical Stochastic Gradient MCMC for Bayesian Deep Learning*, ICLR 2020.
    https://arxiv.org/abs/1902.03932
  """
  _validation.check_scalar("init_value", init_value, lower=0.0, inclusive=True, allow_inf=False)
  _validation.check_int("num_cycles", num_cycles, lower=1)
  _validation.check_int("total_steps", total_steps, lower=1)
  if total_steps < num_cycles:
    raise ValueError(f"total_steps must be >= num_cycles={num_cycles}, got {total_steps!r}.")
  cycle = -(-int(total_steps) // int(num_cycles))
  concrete = _validation.concrete(init_value)
  value = init_value if concrete is None else concrete  # A traced init_value passes unchecked.

  def schedule(count: jax.typing.ArrayLike) -> jax.Array:
    phase = jnp.mod(count, cycle) / cycle
    return jnp.asarray(value / 2 * (jnp.cos(jnp.pi * phase) + 1), jnp.result_type(float))

  return schedule
