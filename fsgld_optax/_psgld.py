"""Preconditioned fSGLD: RMSprop-preconditioned Langevin steps at perturbed weights (pSGLD)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fsgld_optax import _randomness, _source, _validation
from fsgld_optax._fsgld import family
from fsgld_optax._langevin import check_beta, langevin_noise
from fsgld_optax._randomness import LangevinDistribution


class PreconditionedLangevinState(NamedTuple):
  """State of :func:`scale_by_rms_langevin`.

  Attributes:
    count: ``int32[]``, the index ``k`` of the next step.
    rng_key: typed PRNG key of the Langevin noise (the optimizer's key).
    nu: the running mean of squared gradients V, shaped like the parameters, in float32 (or
      the parameter's dtype if wider).
  """

  count: jax.Array
  rng_key: jax.Array
  nu: Any


def scale_by_rms_langevin(
  learning_rate: optax.ScalarOrSchedule,
  beta: optax.ScalarOrSchedule,
  *,
  decay: float = 0.99,
  eps: float = 1e-5,
  initial_scale: float = 1.0,
  key: int | jax.Array,
  distribution: LangevinDistribution = "gaussian",
) -> optax.GradientTransformationExtraArgs:
  r"""The RMSprop-preconditioned Langevin step of pSGLD, on the incoming gradient u.

  .. math::

    V_k = \rho V_{k-1} + (1 - \rho)\, u_k^2, \qquad G_k = 1 / (\epsilon + \sqrt{V_k}),

    \Delta\theta_k = -\lambda_k G_k u_k + \sqrt{2 \lambda_k G_k / \beta_k}\; \xi_k,

  elementwise, with :math:`V_0 =` ``initial_scale`` and no bias correction (see
  :func:`preconditioned_fsgld` for why). The preconditioner and the noise are one piece
  because the noise's scale depends on :math:`G_k`.

  Args:
    learning_rate: step size λ ≥ 0, a scalar or a schedule.
    beta: inverse temperature β > 0, a scalar or a schedule; ``inf`` gives RMSprop.
    decay: ρ in [0, 1).
    eps: ε > 0 added to :math:`\sqrt{V}`.
    initial_scale: :math:`V_0 \ge 0`.
    key: int seed or typed ``jax.random.key`` (the optimizer's key; ξ has its own stream).
    distribution: ``"gaussian"`` or ``"binomial"``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a
    :class:`PreconditionedLangevinState`.

  Examples:
    >>> import jax.numpy as jnp, fsgld_optax
    >>> tx = fsgld_optax.scale_by_rms_langevin(0.1, float("inf"), key=0)
    >>> updates, _ = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
    >>> print(updates)
    [-0.1 -0.1]

  References:
    Li, Chen, Carlson and Carin, *Preconditioned Stochastic Gradient Langevin Dynamics for
    Deep Neural Networks*, AAAI 2016. https://arxiv.org/abs/1512.07666
  """
  _validation.check_scalar(
    "learning_rate", learning_rate, lower=0.0, inclusive=True, allow_inf=False, allow_schedule=True
  )
  noiseless = check_beta(beta)
  _validation.check_fraction("decay", decay)
  _validation.check_scalar("eps", eps, lower=0.0, inclusive=False, allow_inf=False)
  _validation.check_scalar(
    "initial_scale", initial_scale, lower=0.0, inclusive=True, allow_inf=False
  )
  _randomness.check_distribution("distribution", distribution, LangevinDistribution)
  rng_key = _randomness.canonical_key(key)

  def inexact(fn: Any, tree: Any, *rest: Any) -> Any:
    return jax.tree.map(lambda x, *r: fn(x, *r) if _randomness.is_inexact(x) else x, tree, *rest)

  def init_fn(params: optax.Params) -> PreconditionedLangevinState:
    _source.check_params(params, "scale_by_rms_langevin")
    # V in float32 at least: in bfloat16 a decay of 0.999 rounds to 1 and V never forgets.
    nu = inexact(
      lambda p: jnp.full_like(p, initial_scale, dtype=jnp.promote_types(p.dtype, jnp.float32)),
      params,
    )
    return PreconditionedLangevinState(jnp.zeros([], jnp.int32), _randomness.fresh_key(rng_key), nu)

  def update_fn(
    updates: optax.Updates,
    state: PreconditionedLangevinState,
    params: optax.Params | None = None,
    **extra_args: Any,
  ) -> tuple[optax.Updates, PreconditionedLangevinState]:
    del params, extra_args
    # V mirrors the parameters: a gradient of another shape would broadcast silently.
    _source.check_updates(updates, state.nu, "scale_by_rms_langevin")
    lr = _validation.at(learning_rate, state.count)
    _validation.check_schedule_value(
      "learning_rate", learning_rate, lr, lower=0.0, inclusive=True, allow_inf=False
    )
    # ρ and 1 − ρ in V's dtype, computed from ρ as an array (as under inject_hyperparams).
    rho = jnp.asarray(decay, jnp.result_type(float))
    nu = inexact(
      lambda v, u: (rho * v + (1 - rho) * jnp.square(u.astype(v.dtype))).astype(v.dtype),
      state.nu,
      updates,
    )
    precond = inexact(lambda v: 1.0 / (eps + jnp.sqrt(v)), nu)
    steps = inexact(lambda u, g: -lr * g * u, updates, precond)
    if not noiseless:
      beta_k = _validation.at(beta, state.count)
      _validation.check_schedule_value(
        "beta", beta, beta_k, lower=0.0, inclusive=False, allow_inf=True
      )
      xi = langevin_noise(state.rng_key, state.count, updates, distribution)
      coef = 2.0 * lr / beta_k  # a scalar: the same bits whether λ, β are constants or traced
      steps = inexact(lambda s, g, x: s + jnp.sqrt(coef * g) * x, steps, precond, xi)
    new_updates = inexact(lambda s, u: s.astype(u.dtype), steps, updates)
    count, rng_key = _randomness.next_step(state.count, state.rng_key)
    return new_updates, PreconditionedLangevinState(count, rng_key, nu)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)  # pyright: ignore[reportArgumentType]


def preconditioned_fsgld(
  learning_rate: optax.ScalarOrSchedule,
  beta: optax.ScalarOrSchedule,
  *,
  decay: float = 0.99,
  eps: float = 1e-5,
  initial_scale: float = 1.0,
  sigma: optax.ScalarOrSchedule | None = None,
  eta: float = 0.1,
  weight_decay: float = 0.0,
  key: int | jax.Array,
  langevin_noise: LangevinDistribution = "gaussian",
) -> optax.GradientTransformationExtraArgs:
  r"""Preconditioned fSGLD: pSGLD's RMSprop-preconditioned Langevin step at perturbed weights.

  With :math:`g_k` the mean gradient at perturbed weights from
  :func:`perturbed_value_and_grad` and :math:`u_k = g_k + w\,\theta_k`,

  .. math::

    V_k = \rho V_{k-1} + (1 - \rho)\, u_k \odot u_k, \qquad
    G_k = \operatorname{diag}\bigl(1 \oslash (\epsilon + \sqrt{V_k})\bigr),

    \theta_{k+1} = \theta_k - \lambda_k G_k u_k
      + \sqrt{2 \lambda_k G_k / \beta_k}\; \xi_k, \qquad \xi_k \sim \mathcal{N}(0, I).

  **The Γ term is dropped**, as in Li et al.: the exact preconditioned Langevin diffusion has
  the drift :math:`-G\nabla U + \tfrac{1}{\beta}\Gamma`, :math:`\Gamma_i = \sum_j \partial_j
  G_{ij}`, and Γ needs second derivatives. Without it the chain samples
  :math:`\exp(-\beta U_\sigma)` only up to a bias. V is a running mean of :math:`u^2` over
  about :math:`1/(1 - \rho)` steps, so G is smaller after the chain has been where the
  gradient is large: it slows down in the tails and stays there longer, which inflates the
  variances. The bias is about :math:`c\,(1-\rho)\,\tau_i` (relative), with
  :math:`\tau_i = 1/(\lambda G_i a_i)` the relaxation time in steps of a direction of
  curvature :math:`a_i` and :math:`c \approx 0.4`; it vanishes as ``decay`` → 1, where G is
  constant along the chain and the chain is a Langevin chain with a fixed preconditioner,
  exact up to the step-size bias. Measured on a 100:1 Gaussian at λ = 0.01
  (``benchmarks/psgld.py``), variance ratios against the fixed-preconditioner chain, stiff /
  soft direction (τ = 10 / 100 steps):

  ========  ===============  ===============
  decay     stiff            soft
  ========  ===============  ===============
  0.9       1.353            1.779
  0.99      1.044            1.344
  0.999     1.003            1.040
  0.9999    1.002            1.004
  ========  ===============  ===============

  So for sampling take :math:`1 - \rho \ll 1/\tau` of the slowest direction that matters
  (the default 0.99 is an optimiser's choice). With a ``decay`` that close to 1, V needs a
  few :math:`1/(1-\rho)` steps to adapt from :math:`V_0`: start it near the typical squared
  gradient (``initial_scale``). There, at the step size each tolerates (a 5% variance bias),
  pSGLD's effective sample size per gradient along the soft direction is 14 times SGLD's.

  **First steps.** :math:`V_0` = ``initial_scale`` (default 1, so G starts near 1: the first
  steps are SGLD steps, and the preconditioner takes over within about
  :math:`1/(1-\rho)` steps). A bias-corrected :math:`\hat V_k = V_k / (1 - \rho^k)`, as in
  Adam, would give :math:`G_1 = 1/(\epsilon + |u_1|)`: near-zero first gradients then give
  :math:`G \approx 1/\epsilon` and noise of size :math:`\sqrt{2\lambda/(\beta\epsilon)}`,
  which explodes. Set ``initial_scale`` to the typical squared gradient to start adapted.

  **The perturbations are not preconditioned**: ε ~ N(0, σ² I) is isotropic, so the
  smoothed loss is :math:`U_\sigma` with the regulariser
  :math:`\tfrac{\sigma^2}{2}\operatorname{tr}\nabla^2 U`, the same as fSGLD's, and G only
  changes how the chain moves, not what it targets. Preconditioned perturbations
  :math:`\varepsilon \sim \mathcal{N}(0, \sigma^2 G)` would smooth by
  :math:`\tfrac{\sigma^2}{2}\operatorname{tr}(G\,\nabla^2 U)`, a target that moves with G
  along the chain, with no stationary law of its own.

  Args:
    learning_rate: step size λ ≥ 0, a scalar or a schedule.
    beta: inverse temperature β > 0, a scalar or a schedule; ``float("inf")`` gives RMSprop
      (at perturbed weights, with ``sigma > 0``).
    decay: ρ in [0, 1), the RMSprop decay.
    eps: ε > 0 added to :math:`\sqrt{V}` (Li et al. use 1e-5).
    initial_scale: :math:`V_0 \ge 0`.
    sigma: perturbation scale σ ≥ 0, a scalar or a schedule; ``None`` couples it to β.
    eta: coupling exponent η > 0, used when ``sigma`` is ``None``.
    weight_decay: L2 coefficient w ≥ 0 added to the gradient.
    key: int seed or typed ``jax.random.key``.
    langevin_noise: ``"gaussian"`` or ``"binomial"``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; one parameter-sized buffer (V) more than
    :func:`fsgld`.

  Examples:
    >>> import jax.numpy as jnp, optax, fsgld_optax
    >>> loss_fn = lambda p, x: jnp.mean((x @ p) ** 2)
    >>> params = jnp.ones(3)
    >>> tx = fsgld_optax.preconditioned_fsgld(learning_rate=1e-3, beta=1e6, key=0)
    >>> opt_state = tx.init(params)
    >>> grad_fn = fsgld_optax.perturbed_value_and_grad(loss_fn)
    >>> loss, grads = grad_fn(params, opt_state, jnp.eye(3))
    >>> updates, opt_state = tx.update(grads, opt_state, params)
    >>> print(fsgld_optax.find_fsgld_state(opt_state).count)
    1

  References:
    Li, Chen, Carlson and Carin, *Preconditioned Stochastic Gradient Langevin Dynamics for
    Deep Neural Networks*, AAAI 2016. https://arxiv.org/abs/1512.07666

    Bruno et al., *Flatness-Aware Stochastic Gradient Langevin Dynamics*, ICML 2026.
    https://arxiv.org/abs/2510.02174
  """
  _randomness.check_distribution("langevin_noise", langevin_noise, LangevinDistribution)
  return family(
    "preconditioned_fsgld",
    scale_by_rms_langevin(
      learning_rate,
      beta,
      decay=decay,
      eps=eps,
      initial_scale=initial_scale,
      key=key,
      distribution=langevin_noise,
    ),
    beta=beta,
    sigma=sigma,
    eta=eta,
    weight_decay=weight_decay,
    key=key,
    learning_rate=learning_rate,
  )


def psgld(
  learning_rate: optax.ScalarOrSchedule,
  beta: optax.ScalarOrSchedule,
  *,
  decay: float = 0.99,
  eps: float = 1e-5,
  initial_scale: float = 1.0,
  weight_decay: float = 0.0,
  key: int | jax.Array,
  langevin_noise: LangevinDistribution = "gaussian",
) -> optax.GradientTransformationExtraArgs:
  r"""Preconditioned SGLD (pSGLD): :func:`preconditioned_fsgld` with σ = 0.

  .. math::

    \theta_{k+1} = \theta_k - \lambda_k G_k \left(\nabla U(\theta_k) + w\,\theta_k\right)
      + \sqrt{2 \lambda_k G_k / \beta_k}\; \xi_k,
    \qquad G_k = 1 \oslash (\epsilon + \sqrt{V_k}).

  Args:
    learning_rate: step size λ ≥ 0, a scalar or a schedule.
    beta: inverse temperature β > 0, a scalar or a schedule.
    decay: ρ in [0, 1).
    eps: ε > 0.
    initial_scale: :math:`V_0 \ge 0`.
    weight_decay: L2 coefficient w ≥ 0.
    key: int seed or typed ``jax.random.key``.
    langevin_noise: ``"gaussian"`` or ``"binomial"``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax.numpy as jnp, fsgld_optax
    >>> tx = fsgld_optax.psgld(learning_rate=1e-3, beta=1e4, decay=0.999, key=0)
    >>> params = jnp.zeros(2)
    >>> updates, state = tx.update(jnp.ones(2), tx.init(params), params)
    >>> print(updates.shape)
    (2,)

  References:
    Li, Chen, Carlson and Carin, *Preconditioned Stochastic Gradient Langevin Dynamics for
    Deep Neural Networks*, AAAI 2016. https://arxiv.org/abs/1512.07666
  """
  return preconditioned_fsgld(
    learning_rate,
    beta,
    decay=decay,
    eps=eps,
    initial_scale=initial_scale,
    sigma=0.0,
    weight_decay=weight_decay,
    key=key,
    langevin_noise=langevin_noise,
  )
