"""The fSGLD gradient transformation: a Langevin step on a gradient taken at perturbed weights.

Randomness contract (every line is tested in ``tests/``):

1. All randomness of step ``k`` comes from ``FSGLDState.rng_key`` and ``k``
   (``FSGLDState.count``); after ``init`` the user passes no key. The same key gives the
   same trajectory, bitwise, on the same hardware.
2. The perturbations ε of step ``k`` (drawn by :func:`perturbed_value_and_grad`) and the
   Langevin noise ξ of step ``k`` (drawn by ``update``) come from independent streams;
   neither repeats across steps. The wrapper and ``update`` agree on ``k`` and on σ_k
   because both read them from the same state.
3. Under ``jit`` with ``NamedSharding`` the draws are global arrays computed shard by shard
   (threefry-partitionable), so an 8-device run equals the 1-device run.
4. Under ``shard_map``/``pmap`` with ``axis_name``: gradients are averaged over the axis; ξ is
   the same on every device; ε is the same on every device unless
   ``per_device_perturbations=True`` folds in the axis index (n × devices perturbations).
5. Multi-host (``jax.distributed``) runs the same code as multi-device.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fsgld_optax import _randomness
from fsgld_optax._randomness import LangevinDistribution


class FSGLDState(NamedTuple):
  """State of :func:`fsgld`.

  Attributes:
    count: ``int32[]``, the number of updates taken so far; the index ``k`` of the next step.
    rng_key: typed PRNG key ``key<impl>[]``; fixed for the whole run, step ``k`` derives its
      draws from ``(rng_key, k)``.
    sigma: ``float[]``, the perturbation scale σ_k of the next step, read by
      :func:`perturbed_value_and_grad`.

  All fields are arrays, the key a typed key, so ``orbax.checkpoint``'s ``StandardSave``
  and ``StandardRestore`` save and restore the state as it is; a run continued from a
  checkpoint equals the uninterrupted run bitwise.
  """

  count: jax.Array
  rng_key: jax.Array
  sigma: jax.Array


def _concrete_float(value: Any, name: str = "hyperparameter") -> float | None:
  """``value`` as a Python float if it is a concrete real scalar, else ``None``.

  Schedules and traced values (inside ``jit`` or ``inject_hyperparams``) give ``None``.
  """
  if callable(value) or value is None or isinstance(value, bool):
    return None
  try:
    array = np.asarray(value)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None
  if array.dtype.kind not in "iuf":
    return None
  if array.shape != ():
    raise ValueError(f"{name} must be a scalar, got an array of shape {array.shape}.")
  return float(array)


def check_scalar(
  name: str, value: Any, *, lower: float, inclusive: bool, allow_inf: bool = True
) -> None:
  """Raises a ``ValueError`` naming ``name`` if a concrete ``value`` is out of range.

  Traced values and schedules cannot be checked here and pass through.
  """
  x = _concrete_float(value, name)
  if x is None:
    return
  bound = f">= {lower}" if inclusive else f"> {lower}"
  if math.isnan(x) or (x < lower if inclusive else x <= lower):
    raise ValueError(f"{name} must be {bound}, got {x}.")
  if math.isinf(x) and not allow_inf:
    raise ValueError(f"{name} must be finite, got {x}.")


def _map_inexact(fn: Any, tree: Any, *rest: Any) -> Any:
  """``jax.tree.map(fn, tree, *rest)`` on floating leaves of ``tree``; others pass through."""
  return jax.tree.map(
    lambda leaf, *xs: fn(leaf, *xs) if _randomness.is_inexact(leaf) else leaf, tree, *rest
  )


def _at(value: optax.ScalarOrSchedule, count: jax.Array) -> jax.Array:
  """The value of a scalar or schedule at step ``count``, in the default float dtype."""
  return jnp.asarray(value(count) if callable(value) else value, dtype=jnp.result_type(float))


def _check_schedule(
  name: str, schedule: Any, value: jax.Array, *, lower: float, inclusive: bool, allow_inf: bool
) -> None:
  """Checks a schedule's value at the current step where it is concrete (outside ``jit``)."""
  if callable(schedule):
    check_scalar(
      f"{name} (schedule value)", value, lower=lower, inclusive=inclusive, allow_inf=allow_inf
    )


def _zero_non_inexact(updates: Any, params: Any) -> Any:
  """Zero updates for the leaves that fSGLD never moves.

  With ``params``, a leaf moves iff both its parameter and its update are floating; the
  others (integer or boolean parameters, whose gradients are ``float0`` under
  ``jax.grad(..., allow_int=True)``) get zeros of the parameter's dtype. Without ``params``,
  integer, boolean and ``float0`` updates become zeros (``bool`` zeros for ``float0``,
  which add nothing to any dtype).
  """

  def zero(u: Any, p: Any = None) -> Any:
    if p is not None:
      return u if _randomness.is_inexact(u) and _randomness.is_inexact(p) else jnp.zeros_like(p)
    if _randomness.is_inexact(u):
      return u
    dtype = jnp.result_type(u)
    return jnp.zeros(np.shape(u), bool if dtype == jax.dtypes.float0 else dtype)

  if params is None:
    return jax.tree.map(zero, updates)
  return jax.tree.map(zero, updates, params)


def coupled_sigma(beta: Any, eta: Any) -> jax.Array:
  r"""The perturbation scale coupled to the inverse temperature.

  .. math::

    \sigma = \beta^{-(1 + \eta)/4}, \qquad \eta > 0.

  With this coupling the invariant law of fSGLD stays close to the Gibbs law
  :math:`\propto \exp(-\beta\, v)` of the Hessian-trace-regularised loss
  :math:`v = u + \tfrac{\sigma^2}{2} \operatorname{tr} \nabla^2 u`. ``beta=inf`` gives 0.

  Args:
    beta: inverse temperature β > 0 (scalar or array).
    eta: coupling exponent η > 0; the paper's code uses 0.1 or 0.01.

  Returns:
    σ as an array of the default float dtype.

  Examples:
    >>> import fsgld_optax
    >>> print(f"{fsgld_optax.coupled_sigma(1e8, 0.1):.5f}")
    0.00631

  References:
    Bruno et al., *Flatness-Aware Stochastic Gradient Langevin Dynamics*, ICML 2026.
    https://arxiv.org/abs/2510.02174
  """
  check_scalar("beta", beta, lower=0.0, inclusive=False)
  check_scalar("eta", eta, lower=0.0, inclusive=False)
  dtype = jnp.result_type(float)
  beta = jnp.asarray(beta, dtype)
  return jnp.power(beta, -(1.0 + jnp.asarray(eta, dtype)) / 4.0)


def fsgld(
  learning_rate: optax.ScalarOrSchedule,
  beta: optax.ScalarOrSchedule,
  *,
  sigma: optax.ScalarOrSchedule | None = None,
  eta: float = 0.1,
  weight_decay: float = 0.0,
  key: int | jax.Array,
  langevin_noise: LangevinDistribution = "gaussian",
) -> optax.GradientTransformationExtraArgs:
  r"""Flatness-aware stochastic gradient Langevin dynamics (fSGLD).

  Feed it the gradient taken at randomly perturbed weights, from
  :func:`perturbed_value_and_grad`; it makes the Langevin step

  .. math::

    g_k = \frac{1}{n} \sum_{i=1}^{n} \nabla U(\theta_k + \varepsilon_{k,i}),
    \quad \varepsilon_{k,i} \sim \mathcal{N}(0, \sigma_k^2 I),

    \theta_{k+1} = \theta_k - \lambda_k \left(g_k + w\, \theta_k\right)
      + \sqrt{2 \lambda_k / \beta_k}\; \xi_k, \quad \xi_k \sim \mathcal{N}(0, I),

  with :math:`\sigma_k = \beta_k^{-(1+\eta)/4}` unless ``sigma`` is given. fSGLD is SGLD on
  the smoothed loss :math:`U_\sigma(\theta) = \mathbb{E}_\varepsilon U(\theta + \varepsilon)
  = U + \tfrac{\sigma^2}{2}\operatorname{tr}\nabla^2 U + O(\sigma^4)`, so it prefers flat
  minima, at the cost of one gradient per step.

  Special cases: ``sigma=0`` is SGLD (:func:`sgld`); ``beta=inf`` switches the Langevin noise
  off (with ``sigma > 0``: random weight perturbation, RWP, with plain SGD); both give SGD.

  Reliability:

  - Integer and boolean parameter leaves are never moved: they get a zero update and no
    noise (and :func:`perturbed_value_and_grad` never perturbs them).
  - Hyperparameters are checked when ``fsgld`` is called. A schedule's value is checked
    at every step where it is concrete, i.e. outside ``jit`` (run one step of a jitted loop
    under ``jax.disable_jit()`` to check it). Under ``jit`` a negative λ or a β ≤ 0 makes
    the noise scale, and so the update, non-finite, which ``optax.apply_if_finite`` skips
    and ``jax_debug_nans`` reports; a negative σ acts as ``|σ|`` (ε is symmetric).
  - Under ``optax.apply_if_finite`` a skipped step leaves this state, count included,
    unchanged, so it consumes no randomness: the next good step draws what step ``k`` of
    a run without the bad batch would.
  - The update is applied in each parameter's own dtype. In ``bfloat16`` a Langevin step
    of size :math:`\sqrt{2\lambda/\beta} \approx 10^{-5}` is rounded away on weights of
    size ~1; keep float32 master weights and compute in ``bfloat16`` inside the loss
    (``with_compute_dtype``; ``lost_update_fraction`` measures what rounding loses).

  Args:
    learning_rate: step size λ, a scalar or a schedule ``count -> λ_k``; must be ≥ 0.
    beta: inverse temperature β > 0, a scalar or a schedule; ``float("inf")`` for no noise.
      The paper's code uses β⁻¹ in [1e-9, 1e-7].
    sigma: perturbation scale σ ≥ 0, a scalar or a schedule; ``None`` (default) couples it to
      β at every step, σ_k = β_k^{-(1+η)/4}. When σ or β is a schedule and the optimizer is
      wrapped in ``optax.inject_hyperparams``, list them in ``static_args`` so that the
      perturbation and the update use the same step's value.
    eta: coupling exponent η > 0, used when ``sigma`` is ``None``.
    weight_decay: L2 coefficient w ≥ 0 added to the gradient (the paper's code uses 5e-4);
      when non-zero, ``update`` needs ``params``.
    key: int seed or typed ``jax.random.key``; all the randomness of the run derives from it.
    langevin_noise: ``"gaussian"`` (default, exact) or ``"binomial"``: a standardised
      Binomial(8, ½) from 8 random bits per parameter, with exact mean and variance but
      kurtosis 2.75 instead of 3. The sum of many steps' noise is Gaussian either way, so
      ``"binomial"`` is a good cheap choice for optimisation at large β; keep
      ``"gaussian"`` for posterior sampling at moderate β, where each step's noise matters.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is :class:`FSGLDState`.
    Extra keyword arguments to ``update`` are accepted and ignored.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, fsgld_optax
    >>> loss_fn = lambda p, x: jnp.mean((x @ p["w"]) ** 2)
    >>> params = {"w": jnp.ones(3)}
    >>> tx = fsgld_optax.fsgld(learning_rate=0.1, beta=1e8, key=0)
    >>> opt_state = tx.init(params)
    >>> grad_fn = fsgld_optax.perturbed_value_and_grad(loss_fn, n_perturbations=2)
    >>> x = jnp.eye(3)
    >>> for _ in range(3):
    ...   loss, grads = grad_fn(params, opt_state, x)
    ...   updates, opt_state = tx.update(grads, opt_state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> print(opt_state.count, params["w"].shape)
    3 (3,)

  References:
    Bruno, Hwang, An, Sabanis and Lim, *Flatness-Aware Stochastic Gradient Langevin
    Dynamics*, ICML 2026. https://arxiv.org/abs/2510.02174
  """
  check_scalar("learning_rate", learning_rate, lower=0.0, inclusive=True, allow_inf=False)
  check_scalar("beta", beta, lower=0.0, inclusive=False)
  check_scalar("sigma", sigma, lower=0.0, inclusive=True, allow_inf=False)
  check_scalar("eta", eta, lower=0.0, inclusive=False, allow_inf=False)
  check_scalar("weight_decay", weight_decay, lower=0.0, inclusive=True, allow_inf=False)
  _randomness.check_distribution("langevin_noise", langevin_noise, LangevinDistribution)
  rng_key = _randomness.canonical_key(key)
  noiseless = _concrete_float(beta) == math.inf
  no_decay = _concrete_float(weight_decay) == 0.0

  def sigma_at(count: jax.Array) -> jax.Array:
    if sigma is None:
      return coupled_sigma(_at(beta, count), eta)
    sigma_k = _at(sigma, count)
    _check_schedule("sigma", sigma, sigma_k, lower=0.0, inclusive=True, allow_inf=False)
    return sigma_k

  def init_fn(params: optax.Params) -> FSGLDState:
    del params
    count = jnp.zeros([], jnp.int32)
    return FSGLDState(count=count, rng_key=rng_key, sigma=sigma_at(count))

  def update_fn(
    updates: optax.Updates,
    state: FSGLDState,
    params: optax.Params | None = None,
    **extra_args: Any,
  ) -> tuple[optax.Updates, FSGLDState]:
    del extra_args
    if not no_decay and params is None and jax.tree.leaves(updates):
      raise ValueError(
        "fsgld with weight_decay != 0 needs the parameters: call update(grads, opt_state, params)."
      )
    if params is not None and jax.tree.structure(updates) != jax.tree.structure(params):
      raise ValueError(
        "fsgld update got updates and params with different tree structures:\n"
        f"  updates: {jax.tree.structure(updates)}\n  params:  {jax.tree.structure(params)}"
      )
    updates = _zero_non_inexact(updates, params)
    lr = _at(learning_rate, state.count)
    _check_schedule("learning_rate", learning_rate, lr, lower=0.0, inclusive=True, allow_inf=False)
    if no_decay:
      steps = _map_inexact(lambda g: -lr * g, updates)
    else:
      steps = _map_inexact(lambda g, p: -lr * (g + weight_decay * p), updates, params)
    if not noiseless:
      beta_k = _at(beta, state.count)
      _check_schedule("beta", beta, beta_k, lower=0.0, inclusive=False, allow_inf=True)
      noise_scale = jnp.sqrt(2.0 * lr / beta_k)
      key = _randomness.langevin_key(state.rng_key, state.count)
      xi = _randomness.standard_noise_like(key, updates, langevin_noise)
      steps = _map_inexact(lambda s, x: s + noise_scale * x, steps, xi)
    new_updates = _map_inexact(lambda s, g: s.astype(g.dtype), steps, updates)
    count = jnp.asarray(optax.safe_increment(state.count))
    return new_updates, FSGLDState(count=count, rng_key=state.rng_key, sigma=sigma_at(count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)  # pyright: ignore[reportArgumentType]


def sgld(
  learning_rate: optax.ScalarOrSchedule,
  beta: optax.ScalarOrSchedule,
  *,
  weight_decay: float = 0.0,
  key: int | jax.Array,
  langevin_noise: LangevinDistribution = "gaussian",
) -> optax.GradientTransformationExtraArgs:
  r"""Stochastic gradient Langevin dynamics: :func:`fsgld` with σ = 0.

  .. math::

    \theta_{k+1} = \theta_k - \lambda_k \left(\nabla U(\theta_k) + w\, \theta_k\right)
      + \sqrt{2 \lambda_k / \beta_k}\; \xi_k, \quad \xi_k \sim \mathcal{N}(0, I).

  Its state is an :class:`FSGLDState` with ``sigma = 0``, so it also works with
  :func:`perturbed_value_and_grad` (which then perturbs nothing), but a plain
  ``jax.grad`` is all it needs.

  Args:
    learning_rate: step size λ ≥ 0, a scalar or a schedule.
    beta: inverse temperature β > 0, a scalar or a schedule; ``float("inf")`` gives SGD.
    weight_decay: L2 coefficient w ≥ 0 added to the gradient.
    key: int seed or typed ``jax.random.key``.
    langevin_noise: ``"gaussian"`` or ``"binomial"``, as in :func:`fsgld`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax.numpy as jnp, fsgld_optax
    >>> tx = fsgld_optax.sgld(learning_rate=1e-2, beta=1e4, key=0)
    >>> params = jnp.zeros(2)
    >>> updates, state = tx.update(jnp.ones(2), tx.init(params), params)
    >>> print(state.count, float(state.sigma))
    1 0.0

  References:
    Welling and Teh, *Bayesian Learning via Stochastic Gradient Langevin Dynamics*,
    ICML 2011.
  """
  return fsgld(
    learning_rate,
    beta,
    sigma=0.0,
    weight_decay=weight_decay,
    key=key,
    langevin_noise=langevin_noise,
  )
