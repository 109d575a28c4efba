"""fSGHMC: stochastic gradient Hamiltonian Monte Carlo on gradients at perturbed weights."""

from __future__ import annotations

from typing import cast

import jax
import jax.numpy as jnp
import optax

from fsgld_optax import _validation
from fsgld_optax._fsgld import family
from fsgld_optax._langevin import add_langevin_noise
from fsgld_optax._randomness import LangevinDistribution


def fsghmc(
  learning_rate: optax.ScalarOrSchedule,
  beta: optax.ScalarOrSchedule,
  *,
  momentum: float = 0.9,
  sigma: optax.ScalarOrSchedule | None = None,
  eta: float = 0.1,
  weight_decay: float = 0.0,
  key: int | jax.Array,
  langevin_noise: LangevinDistribution = "gaussian",
) -> optax.GradientTransformationExtraArgs:
  r"""Flatness-aware SGHMC: heavy-ball momentum with Langevin noise, at perturbed weights.

  SGHMC (Chen, Fox and Guestrin, 2014) in the SGD-momentum parametrisation, fed the gradient
  :math:`g_k` taken at perturbed weights by :func:`perturbed_value_and_grad`:

  .. math::

    g_k = \frac{1}{n} \sum_{i=1}^{n} \nabla U(\theta_k + \varepsilon_{k,i}),
    \quad \varepsilon_{k,i} \sim \mathcal{N}(0, \sigma_k^2 I),

    v_{k+1} = m\, v_k - \lambda_k \left(g_k + w\, \theta_k\right)
      + \sqrt{2 (1 - m) \lambda_k / \beta_k}\; \xi_k,
    \qquad \theta_{k+1} = \theta_k + v_{k+1},

  with :math:`\sigma_k = \beta_k^{-(1+\eta)/4}` unless ``sigma`` is given. In the notation
  of Chen et al. (their discretised SGHMC with learning rate :math:`\eta = \lambda`, momentum
  decay :math:`\alpha = 1 - m` and no gradient-noise correction, :math:`\hat\beta = 0`) the
  injected noise has variance :math:`2\alpha\eta/\beta`, the one above, so the stationary law
  of :math:`\theta` is :math:`\approx \exp(-\beta U_\sigma)` up to the step-size bias, as for
  :func:`~fsgld_optax.fsgld` (which this equals at ``momentum=0``, update for
  update). Momentum lets the chain move along flat directions :math:`1/(1-m)` times faster
  per gradient: ``momentum=0.9`` at learning rate λ explores like SGLD at λ/(1 − m) with
  far less noise per step.

  **Gradient noise heats the chain as SGLD's does at the step λ/(1 − m).** The injected
  noise adds :math:`2(1-m)\lambda/\beta` to the velocity's variance per step; the noise of the
  gradient itself (mini-batches, and the perturbations:
  :math:`\operatorname{Var}_\varepsilon \nabla U(\theta+\varepsilon) \approx \sigma^2
  \|\nabla^2 U\|^2` per direction) adds :math:`\lambda^2 \operatorname{Var}(g)`, so the
  chain samples at the temperature :math:`\tfrac{1}{\beta}\bigl(1 + \lambda\beta
  \operatorname{Var}(g) / (2(1-m))\bigr)`, hotter where the gradient is noisier (in sharp
  basins, for the perturbations). Chen et al. subtract an estimate of this term
  (:math:`\hat B`); here it is left to the step size, as in :func:`fsgld` but with
  λ/(1 − m) in place of λ: keep λ/(1 − m) as small as SGLD's step would have to be, or
  average more perturbations (``n_perturbations``, ``antithetic``). On the asymmetric
  double well of the tests (β = 1.5, σ = 0.3, m = 0.9), where exp(−βU_σ) puts 0.783 of its
  mass in the flat basin, the chains put 0.825 there at λ = 1e-3 with one perturbation per
  step, 0.801 with two antithetic ones, and 0.786 ± 0.003 at λ = 2e-3 with 16 antithetic
  ones.

  **Schedules act on the new gradient only.** A step-size schedule scales the term added to
  the velocity at step ``k`` (the form above, SGHMC's), not the whole velocity as
  ``optax.sgd(schedule, momentum=m)`` does (:math:`v \leftarrow m v + g`,
  :math:`\theta \leftarrow \theta - \lambda_k v`). With a constant λ the two are the same
  optimizer; after a decay λ → λ/10 the velocity here keeps its size and decays at the rate
  m, while optax's form shrinks it at once. This keeps the noise
  :math:`\sqrt{2(1-m)\lambda_k/\beta}` and the drift on the same footing at every step, which
  the sampler needs (the kinetic temperature stays 1/β through a schedule).

  Nesterov momentum is not offered: its look-ahead adds :math:`m\,v_{k+1}` to the position
  as well, which puts each step's injected noise into θ with weight 1 + m, and no stationary
  law is known for the result.

  Built from the family's pieces::

    optax.chain(
        rwp(σ, key),                                   # the source of perturbations
        optax.masked(optax.chain(                      # on the floating leaves:
            optax.add_decayed_weights(w),              #   only when w != 0
            optax.scale_by_learning_rate(λ),
            add_langevin_noise(λ, β, key=key, friction=1 - m),  # + sqrt(2(1 − m)λ/β) ξ
            optax.trace(decay=m),                      #   v ← m v + (…); θ ← θ + v
        ), floating_leaves),
    )

  Special cases: ``sigma=0`` is SGHMC (:func:`sghmc`); ``beta=inf`` with ``sigma=0`` and a
  constant λ is ``optax.chain(optax.add_decayed_weights(w), optax.sgd(λ, momentum=m))``
  (to float rounding); ``momentum=0`` is :func:`fsgld` with the same key, bitwise.

  Args:
    learning_rate: step size λ ≥ 0, a scalar or a schedule ``count -> λ_k``.
    beta: inverse temperature β > 0, a scalar or a schedule; ``float("inf")`` for no noise.
    momentum: m in [0, 1); the friction is 1 − m.
    sigma: perturbation scale σ ≥ 0, a scalar or a schedule; ``None`` couples it to β,
      σ_k = β_k^{-(1+η)/4}.
    eta: coupling exponent η > 0, used when ``sigma`` is ``None``.
    weight_decay: L2 coefficient w ≥ 0 added to the gradient.
    key: int seed or typed ``jax.random.key``; all the randomness of the run derives from it.
    langevin_noise: ``"gaussian"`` or ``"binomial"``, as in :func:`fsgld`.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; one parameter-sized buffer (the velocity)
    more than :func:`fsgld`.

  Examples:
    >>> import jax.numpy as jnp, optax, fsgld_optax
    >>> loss_fn = lambda p, x: jnp.mean((x @ p) ** 2)
    >>> params = jnp.ones(3)
    >>> tx = fsgld_optax.fsghmc(learning_rate=0.1, beta=1e8, momentum=0.9, key=0)
    >>> opt_state = tx.init(params)
    >>> grad_fn = fsgld_optax.perturbed_value_and_grad(loss_fn)
    >>> for _ in range(3):
    ...   loss, grads = grad_fn(params, opt_state, jnp.eye(3))
    ...   updates, opt_state = tx.update(grads, opt_state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> print(fsgld_optax.find_fsgld_state(opt_state).count)
    3

  References:
    Chen, Fox and Guestrin, *Stochastic Gradient Hamiltonian Monte Carlo*, ICML 2014.
    https://arxiv.org/abs/1402.4102

    Bruno et al., *Flatness-Aware Stochastic Gradient Langevin Dynamics*, ICML 2026.
    https://arxiv.org/abs/2510.02174
  """
  _validation.check_fraction("momentum", momentum)
  # 1 − m in the default float dtype, as optax.inject_hyperparams computes it from its array
  # of m: a plain and an injected optimizer then give the same bits.
  # (A float when m is concrete; under inject_hyperparams m, and so 1 − m, is traced.)
  friction_array = 1.0 - jnp.asarray(momentum, jnp.result_type(float))
  concrete_friction = _validation.concrete(friction_array)
  friction = cast(float, friction_array) if concrete_friction is None else concrete_friction
  return family(
    "fsghmc",
    optax.scale_by_learning_rate(learning_rate),
    add_langevin_noise(
      learning_rate, beta, key=key, friction=friction, distribution=langevin_noise
    ),
    optax.trace(decay=momentum),
    beta=beta,
    sigma=sigma,
    eta=eta,
    weight_decay=weight_decay,
    key=key,
    learning_rate=learning_rate,
  )


def sghmc(
  learning_rate: optax.ScalarOrSchedule,
  beta: optax.ScalarOrSchedule,
  *,
  momentum: float = 0.9,
  weight_decay: float = 0.0,
  key: int | jax.Array,
  langevin_noise: LangevinDistribution = "gaussian",
) -> optax.GradientTransformationExtraArgs:
  r"""Stochastic gradient Hamiltonian Monte Carlo: :func:`fsghmc` with σ = 0.

  .. math::

    v_{k+1} = m\, v_k - \lambda_k \left(\nabla U(\theta_k) + w\, \theta_k\right)
      + \sqrt{2 (1 - m) \lambda_k / \beta_k}\; \xi_k,
    \qquad \theta_{k+1} = \theta_k + v_{k+1}.

  Args:
    learning_rate: step size λ ≥ 0, a scalar or a schedule.
    beta: inverse temperature β > 0, a scalar or a schedule; ``float("inf")`` gives SGD with
      heavy-ball momentum.
    momentum: m in [0, 1).
    weight_decay: L2 coefficient w ≥ 0 added to the gradient.
    key: int seed or typed ``jax.random.key``.
    langevin_noise: ``"gaussian"`` or ``"binomial"``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Examples:
    >>> import jax.numpy as jnp, fsgld_optax
    >>> tx = fsgld_optax.sghmc(learning_rate=1e-2, beta=1e4, momentum=0.9, key=0)
    >>> params = jnp.zeros(2)
    >>> updates, state = tx.update(jnp.ones(2), tx.init(params), params)
    >>> print(updates.shape, float(fsgld_optax.find_fsgld_state(state).sigma))
    (2,) 0.0

  References:
    Chen, Fox and Guestrin, *Stochastic Gradient Hamiltonian Monte Carlo*, ICML 2014.
    https://arxiv.org/abs/1402.4102
  """
  return fsghmc(
    learning_rate,
    beta,
    momentum=momentum,
    sigma=0.0,
    weight_decay=weight_decay,
    key=key,
    langevin_noise=langevin_noise,
  )
