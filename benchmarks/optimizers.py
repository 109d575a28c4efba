"""The optimizers of the benchmarks, built by name with the paper's learning-rate schedule.

==========  ==================================================================  ============
name        update                                                              gradient
==========  ==================================================================  ============
``sgd``     θ ← θ − λ (g + wθ)  (optionally with heavy-ball momentum)             at θ
``sam``     SAM (Foret et al., 2021): the SGD step (optionally with momentum)     at θ, then at
            with the gradient at θ + ρ g/‖g‖ (``optax.contrib.sam``, opaque)       θ + ρ g/‖g‖
``sgld``    θ ← θ − λ (g + wθ) + √(2λ/β) ξ  (:func:`fsgld_optax.sgld`)             at θ
``rwp``     random weight perturbation: fSGLD with β = ∞ and a given σ; with      at θ + ε
            momentum, ``optax.chain(fsgld_optax.rwp(σ), optax.sgd(λ, m))``
``fsgld``   θ ← θ − λ (ḡ + wθ) + √(2λ/β) ξ, σ = β^{-(1+η)/4} unless given         at θ + ε_i
``fsghmc``  v ← m v − λ (ḡ + wθ) + √(2(1−m)λ/β) ξ, θ ← θ + v                      at θ + ε_i
            (:func:`fsgld_optax.fsghmc`, σ coupled as for fSGLD unless given)
==========  ==================================================================  ============

Every optimizer uses the paper's schedule: the learning rate λ is multiplied by 0.1 after
one third and again after two thirds of the training steps (epochs 50 and 100 of 150 in the
paper). Weight decay w is an L2 term added to the gradient (5e-4 in the paper).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import optax

import fsgld_optax

__all__ = ["OPTIMIZERS", "PERTURBED", "Optimizer", "make_optimizer", "paper_schedule"]

OPTIMIZERS = ("sgd", "sam", "sgld", "rwp", "fsgld", "fsghmc")
#: The optimizers that take the gradient at perturbed weights.
PERTURBED = ("rwp", "fsgld", "fsghmc")
#: Momentum of ``fsghmc`` when none is given.
FSGHMC_MOMENTUM = 0.9

#: How a train step must compute the gradient it feeds to the optimizer.
GradientKind = Literal["plain", "perturbed", "sam"]


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """An optax transformation and the gradient it expects.

  Attributes:
    name: one of :data:`OPTIMIZERS`.
    tx: the transformation.
    gradient: ``"plain"`` (``jax.value_and_grad``), ``"perturbed"``
      (:func:`fsgld_optax.perturbed_value_and_grad`) or ``"sam"`` (the plain gradient, and
      ``grad_fn=`` for the adversarial one passed to ``tx.update``).
    schedule: the learning-rate schedule.
  """

  name: str
  tx: optax.GradientTransformationExtraArgs
  gradient: GradientKind
  schedule: optax.Schedule


def paper_schedule(learning_rate: float, total_steps: int) -> optax.Schedule:
  """The learning rate multiplied by 0.1 at 1/3 and again at 2/3 of ``total_steps``.

  Args:
    learning_rate: the initial learning rate.
    total_steps: the number of training steps.

  Returns:
    An ``optax.piecewise_constant_schedule``.

  Examples:
    >>> schedule = paper_schedule(0.1, 150)
    >>> [round(float(schedule(k)), 6) for k in (0, 49, 50, 99, 100, 149)]
    [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
  """
  first, second = max(total_steps // 3, 1), max(2 * total_steps // 3, 1)
  boundaries = {first: 0.1, second: 0.1} if first != second else {first: 0.01}
  return optax.piecewise_constant_schedule(learning_rate, boundaries)


def make_optimizer(
  name: str,
  *,
  learning_rate: float,
  total_steps: int,
  key: int | jax.Array,
  weight_decay: float = 5e-4,
  beta: float = 1e8,
  sigma: float | None = None,
  eta: float = 0.1,
  rho: float = 0.05,
  momentum: float | None = None,
  langevin_noise: Literal["gaussian", "binomial"] = "gaussian",
) -> Optimizer:
  """Builds one of :data:`OPTIMIZERS` with :func:`paper_schedule`.

  Args:
    name: ``"sgd"``, ``"sam"``, ``"sgld"``, ``"rwp"``, ``"fsgld"`` or ``"fsghmc"``.
    learning_rate: the initial learning rate λ.
    total_steps: the number of training steps (for the schedule).
    key: seed or typed key of the Langevin noise and perturbations (``sgld``, ``rwp``,
      ``fsgld``, ``fsghmc``).
    weight_decay: L2 coefficient w.
    beta: inverse temperature β (``sgld``, ``fsgld``, ``fsghmc``).
    sigma: perturbation scale σ; required for ``rwp``; ``None`` couples it to β for
      ``fsgld`` and ``fsghmc``.
    eta: coupling exponent η (``fsgld``, ``fsghmc`` with ``sigma=None``).
    rho: SAM's neighbourhood radius ρ.
    momentum: heavy-ball momentum m in [0, 1) of ``sgd``, of SAM's outer step, of the SGD
      step after ``rwp`` (``optax.sgd(λ, momentum=m)``: the schedule scales the whole
      velocity) and of ``fsghmc`` (its own form: the schedule scales the new gradient
      only). ``None``: 0, except :data:`FSGHMC_MOMENTUM` for ``fsghmc``.
    langevin_noise: ``"gaussian"`` or ``"binomial"`` Langevin noise (``sgld``, ``fsgld``,
      ``fsghmc``).

  Returns:
    An :class:`Optimizer`.

  Raises:
    ValueError: for an unknown name, ``rwp`` without ``sigma``, or a momentum outside
      [0, 1).
  """
  if momentum is not None and not 0.0 <= momentum < 1.0:
    raise ValueError(f"momentum must be in [0, 1), got {momentum!r}.")
  m = (FSGHMC_MOMENTUM if name == "fsghmc" else 0.0) if momentum is None else momentum
  schedule = paper_schedule(learning_rate, total_steps)
  sgd = optax.chain(
    optax.add_decayed_weights(weight_decay),
    optax.sgd(schedule, momentum=m or None),
  )
  if name == "sgd":
    return Optimizer(name, sgd, "plain", schedule)  # pyright: ignore[reportArgumentType]
  if name == "sam":
    adversary = optax.chain(optax.contrib.normalize(), optax.sgd(rho))
    tx = optax.contrib.sam(sgd, adversary, opaque_mode=True)
    return Optimizer(name, tx, "sam", schedule)
  if name == "sgld":
    tx = fsgld_optax.sgld(
      schedule, beta, weight_decay=weight_decay, key=key, langevin_noise=langevin_noise
    )
    return Optimizer(name, tx, "plain", schedule)
  if name == "rwp":
    if sigma is None:
      raise ValueError("rwp needs sigma (the perturbation scale), e.g. --sigma 0.01.")
    if m:
      tx = optax.chain(fsgld_optax.rwp(sigma, key=key), sgd)
    else:
      tx = fsgld_optax.fsgld(schedule, math.inf, sigma=sigma, weight_decay=weight_decay, key=key)
    return Optimizer(name, tx, "perturbed", schedule)  # pyright: ignore[reportArgumentType]
  if name == "fsgld":
    tx = fsgld_optax.fsgld(
      schedule,
      beta,
      sigma=sigma,
      eta=eta,
      weight_decay=weight_decay,
      key=key,
      langevin_noise=langevin_noise,
    )
    return Optimizer(name, tx, "perturbed", schedule)
  if name == "fsghmc":
    tx = fsgld_optax.fsghmc(
      schedule,
      beta,
      momentum=m,
      sigma=sigma,
      eta=eta,
      weight_decay=weight_decay,
      key=key,
      langevin_noise=langevin_noise,
    )
    return Optimizer(name, tx, "perturbed", schedule)
  raise ValueError(f"Unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}.")
