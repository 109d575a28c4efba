"""A Flax Linen train state with BatchNorm statistics and an fSGLD train step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import struct
from flax.training import train_state

from fsgld_optax._perturb import perturbed_value_and_grad
from fsgld_optax._randomness import PerturbationDistribution, is_inexact


class TrainState(train_state.TrainState):
  """``flax.training.train_state.TrainState`` with a ``batch_stats`` collection.

  Attributes:
    batch_stats: the model's ``batch_stats`` collection (BatchNorm running statistics);
      an empty dict for models without BatchNorm.
  """

  batch_stats: Any = struct.field(default_factory=dict)


def linen_train_step(
  loss_fn: Callable[..., Any],
  *,
  n_perturbations: int = 1,
  has_aux: bool = False,
  split_batch: bool = False,
  antithetic: bool = False,
  axis_name: str | None = None,
  per_device_perturbations: bool = False,
  perturbation: PerturbationDistribution = "gaussian",
  perturbation_batch_size: int | None = None,
) -> Callable[..., tuple[TrainState, Any]]:
  r"""Builds an fSGLD train step for a Linen model with BatchNorm statistics.

  One step takes the mean loss and gradient at n perturbations of the parameters (the
  perturbations of step ``k`` of the :func:`fsgld_optax.fsgld` state in ``state.opt_state``),

  .. math::

    \bar g = \frac{1}{n} \sum_{i=1}^{n} \nabla U(\theta + \varepsilon_i; b_i), \qquad
    \varepsilon_i \sim \mathcal{N}(0, \sigma_k^2 I),

  applies it with ``state.apply_gradients`` and stores the new BatchNorm statistics.

  ``loss_fn(params, batch_stats, *batch, **kwargs)`` returns ``(loss, new_batch_stats)``
  (with ``has_aux``, ``(loss, (new_batch_stats, aux))``); it usually calls
  ``model.apply({"params": params, "batch_stats": batch_stats}, x, mutable=["batch_stats"])``.
  Only ``params`` is perturbed; ``batch_stats`` is passed unchanged to every perturbation and
  never split by ``split_batch``.

  **BatchNorm statistics.** The n updated ``batch_stats`` are averaged (floating leaves;
  other leaves come from the first perturbation). Linen's BatchNorm updates its running
  statistics as :math:`r \leftarrow m\, r + (1 - m)\, s_i` with the batch mean or variance
  :math:`s_i` of perturbation ``i``, so the average equals one running-average update with
  the batch statistics averaged over the perturbations,
  :math:`m\, r + (1 - m)\, \tfrac{1}{n}\sum_i s_i`. With ``axis_name`` the result is also
  averaged over the devices, so replicas keep identical statistics.

  Args:
    loss_fn: the loss, as above.
    n_perturbations: the number n ≥ 1 of perturbations averaged per step.
    has_aux: whether ``loss_fn`` returns extra outputs next to the statistics; floating
      leaves are averaged over the perturbations.
    split_batch: give perturbation ``i`` the ``i``-th ``1/n`` slice of every ``batch``
      argument.
    antithetic: use ±ε pairs (n even).
    axis_name: inside ``shard_map``/``pmap``, average the loss, the gradient and the
      statistics over this axis.
    per_device_perturbations: with ``axis_name``, draw a different ε on each device.
    perturbation: ``"gaussian"`` (the paper) or ``"rademacher"``.
    perturbation_batch_size: how many of the n perturbations to evaluate at once; ``None``
      (default) all n. ``1`` is the fast choice for convolutional networks on CPU (see
      :func:`~fsgld_optax.perturbed_value_and_grad`).

  Returns:
    ``step(state, *batch, **kwargs) -> (new_state, loss)`` (``(new_state, (loss, aux))`` with
    ``has_aux``) for a :class:`TrainState` whose ``tx`` contains :func:`fsgld_optax.fsgld`.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, fsgld_optax
    >>> import flax.linen as nn
    >>> import fsgld_optax.flax
    >>> class Net(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x, train):
    ...     x = nn.BatchNorm(use_running_average=not train)(nn.Dense(4)(x))
    ...     return nn.Dense(1)(x)[:, 0]
    >>> model = Net()
    >>> x, y = jnp.ones((8, 3)), jnp.zeros(8)
    >>> variables = model.init(jax.random.key(0), x, train=False)
    >>> state = fsgld_optax.flax.TrainState.create(
    ...     apply_fn=model.apply,
    ...     params=variables["params"],
    ...     batch_stats=variables["batch_stats"],
    ...     tx=fsgld_optax.fsgld(learning_rate=0.1, beta=1e8, key=0))
    >>> def loss_fn(params, batch_stats, x, y):
    ...   out, updates = model.apply({"params": params, "batch_stats": batch_stats}, x,
    ...                              train=True, mutable=["batch_stats"])
    ...   return jnp.mean((out - y) ** 2), updates["batch_stats"]
    >>> train_step = jax.jit(fsgld_optax.flax.linen_train_step(loss_fn, n_perturbations=2))
    >>> for _ in range(3):
    ...   state, loss = train_step(state, x, y)
    >>> print(int(state.step), fsgld_optax.find_fsgld_state(state.opt_state).count)
    3 3

  References:
    Bruno et al., *Flatness-Aware Stochastic Gradient Langevin Dynamics*, ICML 2026.
    https://arxiv.org/abs/2510.02174
  """
  options: dict[str, Any] = dict(
    n_perturbations=n_perturbations,
    has_aux=True,
    split_batch=split_batch,
    antithetic=antithetic,
    axis_name=axis_name,
    per_device_perturbations=per_device_perturbations,
    perturbation=perturbation,
    perturbation_batch_size=perturbation_batch_size,
  )
  perturbed_value_and_grad(loss_fn, **options)  # Validates the options now.

  def step(state: TrainState, *batch: Any, **kwargs: Any) -> tuple[TrainState, Any]:
    # Argument 0 after (params, opt_state) is batch_stats, never split.
    grad_fn = perturbed_value_and_grad(
      loss_fn, batch_argnums=tuple(range(1, len(batch) + 1)), **options
    )
    (loss, out), grads = grad_fn(state.params, state.opt_state, state.batch_stats, *batch, **kwargs)
    batch_stats, aux = out if has_aux else (out, None)
    if axis_name is not None:
      batch_stats = jax.tree.map(
        lambda x: jax.lax.pmean(x, axis_name) if is_inexact(x) else x, batch_stats
      )
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    return new_state, ((loss, aux) if has_aux else loss)

  return step
