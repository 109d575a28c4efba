"""The fSGLD family's shared assembly and its first member, fSGLD.

Randomness contract of every member (each line is tested in ``tests/``):

1. All randomness of step ``k`` comes from the key given to the factory and ``k``: the
   source of perturbations (:class:`~fsgld_optax.FSGLDState`) and the Langevin noise
   (:class:`~fsgld_optax.LangevinState`) each hold a copy of it and count the steps
   together; after ``init`` the user passes no key. The same key gives the same trajectory,
   bitwise, on the same hardware.
2. The perturbations ε of step ``k`` (drawn by :func:`perturbed_value_and_grad`) and the
   Langevin noise ξ of step ``k`` (drawn by ``update``) come from independent streams,
   ``fold_in(fold_in(key, k), 0)`` and ``… , 1)``; neither repeats across steps, also past
   2³¹ − 1 steps (the key ratchets once the counter saturates). The wrapper reads ``k`` and
   σ_k from the source's state, so it and ``update`` agree on the step without the user.
3. Under ``jit`` with ``NamedSharding`` the draws are global arrays computed shard by shard
   (threefry-partitionable), so an 8-device run equals the 1-device run.
4. Under ``shard_map``/``pmap`` with ``axis_name``: gradients are averaged over the axis; ξ is
   the same on every device; ε is the same on every device unless
   ``per_device_perturbations=True`` folds in the axis index (n × devices perturbations).
5. Multi-host (``jax.distributed``) runs the same code as multi-device.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from fsgld_optax import _randomness, _validation
from fsgld_optax._langevin import add_langevin_noise, check_beta
from fsgld_optax._randomness import LangevinDistribution
from fsgld_optax._source import perturbation_source


def _floating(tree: Any) -> Any:
  return jax.tree.map(_randomness.is_inexact, tree)


def family(
  name: str,
  *steps: optax.GradientTransformation,
  beta: optax.ScalarOrSchedule,
  sigma: optax.ScalarOrSchedule | None,
  eta: Any,
  weight_decay: Any,
  key: int | jax.Array,
  learning_rate: optax.ScalarOrSchedule,
) -> optax.GradientTransformationExtraArgs:
  """A member of the family: the source of perturbations, then the ``steps``.

  After checking the shared arguments, chains the source of perturbations (σ given, or
  coupled to β at every step), then ``optax.add_decayed_weights`` (for a non-zero
  ``weight_decay``) and ``steps``, the latter on the floating leaves only (``optax.masked``),
  so integer and boolean leaves keep the zero updates of their dtype that the source gives
  them.
  """
  _validation.check_scalar(
    "learning_rate", learning_rate, lower=0.0, inclusive=True, allow_inf=False, allow_schedule=True
  )
  check_beta(beta)
  if sigma is not None:
    _validation.check_scalar(
      "sigma", sigma, lower=0.0, inclusive=True, allow_inf=False, allow_schedule=True
    )
  _validation.check_scalar("eta", eta, lower=0.0, inclusive=False, allow_inf=False)
  _validation.check_scalar("weight_decay", weight_decay, lower=0.0, inclusive=True, allow_inf=False)
  if sigma is None:
    sigma_of_step = lambda count: coupled_sigma(_validation.at(beta, count), eta)
  else:
    sigma_of_step = sigma
  # Left out only for a Python zero: an array (e.g. from optax.inject_hyperparams) may be traced
  # at update time, and the state must have the same structure at init and update.
  if not (isinstance(weight_decay, int | float) and weight_decay == 0):
    steps = (optax.add_decayed_weights(weight_decay), *steps)
  inner = optax.with_extra_args_support(optax.masked(optax.chain(*steps), _floating))

  def update_fn(
    updates: optax.Updates, state: Any, params: optax.Params | None = None, **extra_args: Any
  ) -> tuple[optax.Updates, Any]:
    if params is None and not jax.tree.leaves(updates):
      params = updates  # An empty tree needs no parameters, whatever the steps ask for.
    return inner.update(updates, state, params, **extra_args)

  return optax.chain(
    perturbation_source(sigma_of_step, key=key, name=name),
    optax.GradientTransformationExtraArgs(inner.init, update_fn),  # pyright: ignore[reportArgumentType]
  )


def coupled_sigma(beta: Any, eta: Any) -> jax.Array:
  r"""The perturbation scale coupled to the inverse temperature.

  .. math::

    \sigma = \beta^{-(1 + \eta)/4}, \qquad \eta > 0.

  With this coupling the invariant law of fSGLD stays close to the Gibbs law
  :math:`\propto \exp(-\beta\, v)` of the Hessian-trace-regularised loss
  :math:`v = u + \tfrac{\sigma^2}{2} \operatorname{tr} \nabla^2 u`. ``beta=inf`` gives 0.

  Args:
    beta: inverse temperature β > 0 (scalar or array); ``inf`` gives σ = 0.
    eta: coupling exponent η > 0, finite (scalar or array, broadcast against ``beta``); the
      paper's code uses 0.1 or 0.01.

  Returns:
    σ as an array of the default float dtype, of the broadcast shape of ``beta`` and ``eta``.

  Raises:
    ValueError: naming ``beta`` or ``eta`` for a concrete entry that is not a real number
      > 0 (NaN, a boolean, a string, a complex number, ``None``), an ``eta`` that is
      ``inf``, a finite value that overflows the default float dtype, or shapes that do not
      broadcast. Traced values (under ``jit``, ``vmap``, ``grad``) are not checked.

  Examples:
    >>> import fsgld_optax
    >>> print(f"{fsgld_optax.coupled_sigma(1e8, 0.1):.5f}")
    0.00631

  References:
    Bruno et al., *Flatness-Aware Stochastic Gradient Langevin Dynamics*, ICML 2026.
    https://arxiv.org/abs/2510.02174
  """
  dtype = jnp.result_type(float)
  beta = _validation.positive_array("beta", beta, dtype, allow_inf=True)
  eta = _validation.positive_array("eta", eta, dtype, allow_inf=False)
  try:
    shape = jnp.broadcast_shapes(jnp.shape(beta), jnp.shape(eta))
  except ValueError as error:
    raise ValueError(
      f"beta of shape {jnp.shape(beta)} and eta of shape {jnp.shape(eta)} do not broadcast."
    ) from error
  return jnp.power(jnp.broadcast_to(beta, shape), -(1.0 + jnp.broadcast_to(eta, shape)) / 4.0)


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

  It is built like an optax alias, from pieces with one job each::

    optax.chain(
        rwp(σ, key),                             # the source of perturbations (FSGLDState)
        optax.masked(optax.chain(                # on the floating leaves:
            optax.add_decayed_weights(w),        #   g + w θ (only when w != 0)
            optax.scale_by_learning_rate(λ),     #   −λ (g + w θ)
            add_langevin_noise(λ, β, key=key),   #   + sqrt(2λ/β) ξ
        ), floating_leaves),
    )

  so its state is a tuple; :func:`find_fsgld_state` returns the :class:`FSGLDState` in it.

  Special cases: ``sigma=0`` is SGLD (:func:`sgld`); ``beta=inf`` switches the Langevin noise
  off (with ``sigma > 0``: random weight perturbation, RWP, with plain SGD); both give SGD.

  Reliability:

  - Integer and boolean parameter leaves are never moved: they get a zero update and no
    noise (and :func:`perturbed_value_and_grad` never perturbs them). Complex leaves are
    rejected at ``init``: split them into real and imaginary parts.
  - Hyperparameters are checked when ``fsgld`` is called, with an error naming the argument
    (booleans, strings, ``None``, complex numbers, arrays, NaN, out-of-range values and
    values that overflow float32 are rejected; ``bfloat16``/``float16`` scalars are checked
    like floats). A schedule's value is checked at every step where it is concrete, i.e.
    outside ``jit`` (run one step of a jitted loop under ``jax.disable_jit()`` to check it).
    Under ``jit`` a negative λ or a β ≤ 0 makes the noise scale, and so the update,
    non-finite, which ``optax.apply_if_finite`` skips and ``jax_debug_nans`` reports; a
    negative σ acts as ``|σ|`` (ε is symmetric).
  - Under ``optax.apply_if_finite`` a skipped step leaves this state, count included,
    unchanged, so it consumes no randomness: the next good step draws what step ``k`` of
    a run without the bad batch would.
  - The step counter saturates at 2³¹ − 1 (schedules stay at their last value); from then on
    the key ratchets every step, so the noise stays fresh for any number of steps.
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
    An ``optax.GradientTransformationExtraArgs``. Extra keyword arguments to ``update`` are
    accepted and ignored.

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
    >>> print(fsgld_optax.find_fsgld_state(opt_state).count, params["w"].shape)
    3 (3,)

  References:
    Bruno, Hwang, An, Sabanis and Lim, *Flatness-Aware Stochastic Gradient Langevin
    Dynamics*, ICML 2026. https://arxiv.org/abs/2510.02174
  """
  return family(
    "fsgld",
    optax.scale_by_learning_rate(learning_rate),
    add_langevin_noise(learning_rate, beta, key=key, distribution=langevin_noise),
    beta=beta,
    sigma=sigma,
    eta=eta,
    weight_decay=weight_decay,
    key=key,
    learning_rate=learning_rate,
  )


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

  Its state holds an :class:`FSGLDState` with ``sigma = 0``, so it also works with
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
    >>> source = fsgld_optax.find_fsgld_state(state)
    >>> print(source.count, float(source.sigma))
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
