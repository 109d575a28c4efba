"""Perturbed gradients for Flax NNX modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optax
from flax import nnx

from fsgld_optax._perturb import perturbed_value_and_grad
from fsgld_optax._randomness import PerturbationDistribution


def _pure_opt_state(optimizer_or_state: Any) -> optax.OptState:
  """The optimizer state as plain arrays, from an ``nnx.Optimizer`` or its ``opt_state``."""
  if isinstance(optimizer_or_state, nnx.Optimizer):
    optimizer_or_state = optimizer_or_state.opt_state
  return nnx.as_pure(optimizer_or_state)


def nnx_value_and_grad(
  loss_fn: Callable[..., Any],
  *,
  n_perturbations: int = 1,
  has_aux: bool = False,
  wrt: Any = nnx.Param,
  split_batch: bool = False,
  antithetic: bool = False,
  axis_name: str | None = None,
  per_device_perturbations: bool = False,
  perturbation: PerturbationDistribution = "gaussian",
  perturbation_batch_size: int | None = None,
) -> Callable[..., Any]:
  r"""Mean loss and gradient of an NNX module at n random perturbations of its parameters.

  The NNX counterpart of :func:`fsgld_optax.perturbed_value_and_grad`. The returned function
  splits ``model`` into its parameters (the variables matched by ``wrt``) and the rest,
  evaluates ``loss_fn`` on a copy of the model whose parameters are
  :math:`\theta + \varepsilon_i`, :math:`\varepsilon_i \sim \mathcal{N}(0, \sigma_k^2 I)`,
  for the ``n`` perturbations of the step ``k`` held in the optimizer state, and returns

  .. math::

    \bar U = \frac{1}{n} \sum_{i=1}^{n} U(\theta + \varepsilon_i; b_i), \qquad
    \bar g = \frac{1}{n} \sum_{i=1}^{n} \nabla_\theta U(\theta + \varepsilon_i; b_i).

  Only the variables matched by ``wrt`` are perturbed; ``nnx.BatchStat``, RNG state and any
  other variable are not.

  **State written back to** ``model``. Forward passes may update variables other than the
  parameters (BatchNorm running statistics, RNG counters). After the call, ``model`` holds
  the combination of the n updated states: floating variables are averaged over the
  perturbations and all others (integer counters, keys) are taken from the first
  perturbation, which for counters equals a single forward pass. For ``nnx.BatchNorm``,
  whose running statistics update as :math:`r \leftarrow m\, r + (1 - m)\, s_i` with the
  batch statistic :math:`s_i` (mean or variance) of perturbation ``i``, the mean of the n
  updated values is

  .. math::

    \frac{1}{n} \sum_{i=1}^{n} \bigl(m\, r + (1 - m)\, s_i\bigr)
      = m\, r + (1 - m)\, \frac{1}{n} \sum_{i=1}^{n} s_i,

  one running-average update with the batch statistics averaged over the perturbations.
  The n forward passes share the model's RNG state, so e.g. ``nnx.Dropout`` draws the same
  mask in each of them. Parameters of ``model`` are left unchanged: apply the returned
  gradient with ``optimizer.update(model, grads)``.

  Args:
    loss_fn: ``loss_fn(model, *args, **kwargs) -> loss`` (or ``(loss, aux)`` with
      ``has_aux``), with a scalar ``loss``.
    n_perturbations: the number n ≥ 1 of perturbations averaged per step.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``; floating leaves of ``aux`` are
      averaged over the perturbations, other leaves come from the first.
    wrt: an ``nnx`` filter selecting the variables to perturb and differentiate; it must match
      the ``wrt`` of the ``nnx.Optimizer``.
    split_batch: give perturbation ``i`` the ``i``-th ``1/n`` slice of every positional
      argument after ``model`` (see :func:`fsgld_optax.perturbed_value_and_grad`).
    antithetic: use ±ε pairs (n even).
    axis_name: inside ``shard_map``/``pmap``, average the loss and gradient over this axis.
      The state written back to ``model`` is per device.
    per_device_perturbations: with ``axis_name``, draw a different ε on each device.
    perturbation: ``"gaussian"`` (the paper) or ``"rademacher"``.
    perturbation_batch_size: how many of the n perturbations to evaluate at once; ``None``
      (default) all n. ``1`` is the fast choice for convolutional networks on CPU (see
      :func:`~fsgld_optax.perturbed_value_and_grad`).

  Returns:
    ``f(model, optimizer, *args, **kwargs) -> (loss, grads)`` (or ``((loss, aux), grads)``),
    where ``optimizer`` is the ``nnx.Optimizer`` built with :func:`fsgld_optax.fsgld` (or
    its ``opt_state``), and ``grads`` is an ``nnx.State`` of the ``wrt`` variables, ready for
    ``optimizer.update(model, grads)``. Call it eagerly or inside ``nnx.jit``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, fsgld_optax
    >>> from flax import nnx
    >>> import fsgld_optax.flax
    >>> class Net(nnx.Module):
    ...   def __init__(self, rngs):
    ...     self.dense = nnx.Linear(3, 4, rngs=rngs)
    ...     self.norm = nnx.BatchNorm(4, rngs=rngs)
    ...   def __call__(self, x):
    ...     return self.norm(self.dense(x)).sum(axis=-1)
    >>> model = Net(nnx.Rngs(0))
    >>> optimizer = nnx.Optimizer(
    ...     model, fsgld_optax.fsgld(learning_rate=0.1, beta=1e8, key=0), wrt=nnx.Param)
    >>> loss_fn = lambda model, x, y: jnp.mean((model(x) - y) ** 2)
    >>> grad_fn = fsgld_optax.flax.nnx_value_and_grad(loss_fn, n_perturbations=2)
    >>> @nnx.jit
    ... def train_step(model, optimizer, x, y):
    ...   loss, grads = grad_fn(model, optimizer, x, y)
    ...   optimizer.update(model, grads)
    ...   return loss
    >>> x, y = jnp.ones((8, 3)), jnp.zeros(8)
    >>> for _ in range(3):
    ...   loss = train_step(model, optimizer, x, y)
    >>> print(int(optimizer.step[...]), int(nnx.as_pure(optimizer.opt_state).count))
    3 3

  References:
    Bruno et al., *Flatness-Aware Stochastic Gradient Langevin Dynamics*, ICML 2026.
    https://arxiv.org/abs/2510.02174
  """
  options: dict[str, Any] = dict(
    n_perturbations=n_perturbations,
    split_batch=split_batch,
    antithetic=antithetic,
    axis_name=axis_name,
    per_device_perturbations=per_device_perturbations,
    perturbation=perturbation,
    perturbation_batch_size=perturbation_batch_size,
  )
  # Validates the options now rather than at the first call.
  perturbed_value_and_grad(loss_fn, has_aux=True, **options)

  def wrapped(model: nnx.Module, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
    graphdef, params, rest = nnx.split(model, wrt, ...)

    def pure_loss(params: nnx.State, *args: Any, **kwargs: Any) -> Any:
      # copy=True gives fresh variables at the current trace level, so forward passes can
      # update BatchNorm statistics inside the wrapper's vmap and grad.
      local = nnx.merge(graphdef, params, rest, copy=True)
      out = loss_fn(local, *args, **kwargs)
      loss, aux = out if has_aux else (out, None)
      _, _, new_rest = nnx.split(local, wrt, ...)
      return loss, (aux, new_rest)

    grad_fn = perturbed_value_and_grad(pure_loss, has_aux=True, **options)
    (loss, (aux, new_rest)), grads = grad_fn(params, _pure_opt_state(optimizer), *args, **kwargs)
    nnx.update(model, new_rest)
    return ((loss, aux), grads) if has_aux else (loss, grads)

  return wrapped
