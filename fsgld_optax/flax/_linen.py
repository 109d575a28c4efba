"""A Linen train state with BatchNorm statistics, and an fSGLD train step for any TrainState."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.errors
import jax
from flax import struct
from flax.training import train_state

from fsgld_optax._perturb import perturbed_value_and_grad
from fsgld_optax._randomness import PerturbationDistribution, is_inexact
from fsgld_optax.flax._common import (
  check_aux_prefix,
  check_batch_to_split,
  check_options,
  user_batch_argnums,
)


class TrainState(train_state.TrainState):
  """``flax.training.train_state.TrainState`` with a ``batch_stats`` collection.

  Attributes:
    batch_stats: the model's ``batch_stats`` collection (BatchNorm running statistics);
      an empty dict for models without BatchNorm.
  """

  batch_stats: Any = struct.field(default_factory=dict)


def _describe_call(with_stats: bool, state: Any) -> str:
  if with_stats:
    return (
      f"linen_train_step called loss_fn(params, batch_stats, *batch, **kwargs), because state "
      f"({type(state).__name__}) has a batch_stats field; loss_fn must return (loss, "
      "new_batch_stats) (with has_aux, (loss, (new_batch_stats, aux))). For a model without "
      "BatchNorm, pass a flax.training.train_state.TrainState (no batch_stats field) and "
      "loss_fn(params, *batch)."
    )
  return (
    f"linen_train_step called loss_fn(params, *batch, **kwargs), because state "
    f"({type(state).__name__}) has no batch_stats field; loss_fn must return the loss (with "
    "has_aux, (loss, aux)). For a model with BatchNorm, use fsgld_optax.flax.TrainState (or a "
    "TrainState subclass with a batch_stats field) and loss_fn(params, batch_stats, *batch)."
  )


def linen_train_step(
  loss_fn: Callable[..., Any],
  *,
  n_perturbations: int = 1,
  has_aux: bool = False,
  split_batch: bool = False,
  batch_argnums: int | Sequence[int] | None = None,
  aux_reduction: Any = None,
  antithetic: bool = False,
  axis_name: str | None = None,
  per_device_perturbations: bool = False,
  perturbation: PerturbationDistribution = "gaussian",
  perturbation_batch_size: int | None = None,
) -> Callable[..., tuple[Any, Any]]:
  r"""Builds an fSGLD train step for a Linen ``TrainState``, with or without BatchNorm.

  One step takes the mean loss and gradient at n perturbations of the parameters (the
  perturbations of step ``k`` of the source of perturbations in ``state.opt_state``: a
  :func:`fsgld_optax.fsgld` state, :func:`fsgld_optax.rwp` chained in front of another
  optimizer, ..., found with :func:`fsgld_optax.find_fsgld_state`),

  .. math::

    \bar g = \frac{1}{n} \sum_{i=1}^{n} \nabla U(\theta + \varepsilon_i; b_i), \qquad
    \varepsilon_i \sim \mathcal{N}(0, \sigma_k^2 I),

  applies it with ``state.apply_gradients`` and, for a model with BatchNorm, stores the new
  statistics.

  **Two kinds of state, two signatures of** ``loss_fn``, chosen by the state's fields:

  * A state with a ``batch_stats`` field (:class:`TrainState`, or any
    ``flax.training.train_state.TrainState`` subclass that declares one, as Flax's ImageNet
    example does): ``loss_fn(params, batch_stats, *batch, **kwargs)`` returns ``(loss,
    new_batch_stats)`` (with ``has_aux``, ``(loss, (new_batch_stats, aux))``); it usually
    calls ``model.apply({"params": params, "batch_stats": batch_stats}, x,
    mutable=["batch_stats"])``. ``batch_stats`` is passed unchanged to every perturbation
    and never split.
  * A state without one (Flax's own ``flax.training.train_state.TrainState``, for a model
    without BatchNorm): ``loss_fn(params, *batch, **kwargs)`` returns ``loss`` (with
    ``has_aux``, ``(loss, aux)``), as for ``jax.value_and_grad``.

  A loss of the other kind fails with an error that says which call was made and what to
  change.

  **BatchNorm statistics.** The n updated ``batch_stats`` are averaged (floating leaves;
  other leaves come from the first perturbation). Linen's BatchNorm updates its running
  statistics as :math:`r \leftarrow m\, r + (1 - m)\, s_i` with the batch mean or variance
  :math:`s_i` of perturbation ``i``, so the average equals one running-average update with
  the batch statistics averaged over the perturbations,
  :math:`m\, r + (1 - m)\, \tfrac{1}{n}\sum_i s_i`. With ``axis_name`` the result is also
  averaged over the devices, so replicas keep identical statistics. Under ``split_batch``
  each perturbation normalises with the statistics of its own ``1/n`` slice ("ghost batch
  normalisation"): the running mean gets the mean of the slice means (the full-batch mean),
  the running variance the mean of the within-slice variances, smaller than the full-batch
  variance by the variance of the slice means.

  **Dropout.** Linen draws dropout masks from an ``rngs={"dropout": key}`` that the loss
  passes to ``apply``; a key passed as a keyword argument of the step is never split, so all
  n perturbations draw the same masks. To give each slice of ``split_batch`` its own masks,
  pass per-example keys (``jax.random.split(key, batch_size)``) as a batched argument, or
  fold a slice-dependent quantity into the key inside the loss.

  **Antithetic pairs under** ``split_batch``. Perturbations ``i`` and ``i + n/2`` (``+ε``
  and ``−ε``) see different slices of the batch, so the odd-order terms of the Taylor
  expansion cancel only in expectation over the data, not within the step.

  Args:
    loss_fn: the loss, as above.
    n_perturbations: the number n ≥ 1 of perturbations averaged per step.
    has_aux: whether ``loss_fn`` returns extra outputs ``aux``, combined as
      ``aux_reduction`` says.
    split_batch: give perturbation ``i`` the ``i``-th ``1/n`` slice (along the leading axis)
      of every leaf of the batched arguments, so that n perturbations cost one full-batch
      gradient. Raises if no batched argument holds an array: a loss that closes over its
      batch (as in Flax's Linen examples) would silently cost n full-batch gradients, so pass
      the batch to the step.
    batch_argnums: which of the step's ``*batch`` arguments are batched, for
      ``split_batch``; by default all of them. Keyword arguments are never split.
    aux_reduction: how ``aux`` is combined over the perturbations: ``"mean"``,
      ``"concat"`` (per-example leaves, e.g. logits, concatenated along axis 0 in slice
      order: the whole batch's order with ``split_batch``), ``"stack"`` (a leading axis of
      length n) or a pytree prefix of ``aux`` with those strings as leaves; see
      :func:`fsgld_optax.perturbed_value_and_grad`. ``None`` (default): ``"mean"``, except
      that under ``split_batch`` (n > 1) an ``aux`` leaf with a shape raises an error asking
      for a choice. The BatchNorm statistics are always averaged, as above.
    antithetic: use ±ε pairs (n even); see the note on ``split_batch`` above.
    axis_name: inside ``shard_map``/``pmap``, average the loss, the gradient and the
      statistics over this axis.
    per_device_perturbations: with ``axis_name``, draw a different ε on each device.
    perturbation: ``"gaussian"`` (the paper) or ``"rademacher"``.
    perturbation_batch_size: how many of the n perturbations to evaluate at once; ``None``
      (default) all n, vectorised with ``jax.vmap`` (n perturbed copies of the weights and
      their activations alive together); smaller groups run one after another with running
      sums, so memory stays that of one group. The CPU trap: XLA turns a convolution
      vectorised over n weight tensors into a grouped convolution that runs many times
      slower than n plain ones, so use ``1`` for convolutional networks on CPU. Elsewhere,
      measure. Must divide n; the draws are the same for every value.

  Returns:
    ``step(state, *batch, **kwargs) -> (new_state, loss)`` (``(new_state, (loss, aux))`` with
    ``has_aux``) for a ``TrainState`` whose ``tx`` holds a source of perturbations.

  Raises:
    TypeError: for a flag (``has_aux``, ``split_batch``, ``antithetic``,
      ``per_device_perturbations``) that is not a bool, an ``axis_name`` that is not a
      string or tuple of strings, and, when called, a ``state`` that is not a ``TrainState``.
    ValueError: for invalid options (as :func:`fsgld_optax.perturbed_value_and_grad`); when
      called, for a ``batch_argnums`` out of range, ``split_batch`` with no batch passed to
      the step, a loss whose output does not fit the state's kind (see above), or a state
      with a ``dynamic_scale`` (float16 loss scaling, which the step does not apply).

  Examples:
    A model with BatchNorm, in :class:`TrainState`:

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

    A model without BatchNorm in Flax's own ``TrainState``, with per-example outputs:

    >>> from flax.training import train_state
    >>> dense = nn.Dense(1)
    >>> state = train_state.TrainState.create(
    ...     apply_fn=dense.apply, params=dense.init(jax.random.key(0), x)["params"],
    ...     tx=optax.chain(fsgld_optax.rwp(0.01, key=0), optax.adamw(1e-3)))
    >>> def plain_loss(params, x, y):
    ...   out = dense.apply({"params": params}, x)[:, 0]
    ...   return jnp.mean((out - y) ** 2), out
    >>> step = jax.jit(fsgld_optax.flax.linen_train_step(
    ...     plain_loss, n_perturbations=4, has_aux=True, split_batch=True,
    ...     aux_reduction="concat"))
    >>> state, (loss, out) = step(state, x, y)
    >>> print(out.shape, int(fsgld_optax.find_fsgld_state(state.opt_state).count))
    (8,) 1

  References:
    Bruno et al., *Flatness-Aware Stochastic Gradient Langevin Dynamics*, ICML 2026.
    https://arxiv.org/abs/2510.02174
  """
  check_options(
    has_aux=has_aux,
    split_batch=split_batch,
    antithetic=antithetic,
    per_device_perturbations=per_device_perturbations,
    axis_name=axis_name,
    batch_argnums=batch_argnums,
  )
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
  # Validates the options now.
  perturbed_value_and_grad(loss_fn, aux_reduction=("mean", aux_reduction), **options)

  def step(state: Any, *batch: Any, **kwargs: Any) -> tuple[Any, Any]:
    if not all(hasattr(state, name) for name in ("params", "opt_state", "apply_gradients")):
      raise TypeError(
        "state must be a flax.training.train_state.TrainState (or fsgld_optax.flax.TrainState), "
        f"got {type(state).__name__}."
      )
    if getattr(state, "dynamic_scale", None) is not None:
      raise ValueError(
        "state has a dynamic_scale (flax.training.dynamic_scale, for float16 training), which "
        "linen_train_step does not apply: the loss would not be scaled. Keep float32 master "
        "weights instead (fsgld_optax.with_compute_dtype), or set dynamic_scale=None."
      )
    with_stats = hasattr(state, "batch_stats")
    argnums = user_batch_argnums(batch_argnums, batch, "batch arguments after state")
    if split_batch and n_perturbations > 1:
      check_batch_to_split(
        batch, argnums, n_perturbations, "step(state, *batch)", "argument (after state)"
      )
    offset = 1 if with_stats else 0
    batched = tuple(i + offset for i in argnums)

    def checked_loss(params: Any, *args: Any, **kwargs: Any) -> Any:
      try:
        out = loss_fn(params, *args, **kwargs)
      except (TypeError, flax.errors.FlaxError) as error:
        error.add_note(_describe_call(with_stats, state))
        raise
      if with_stats or has_aux:
        if not (isinstance(out, tuple) and len(out) == 2):
          raise ValueError(
            f"loss_fn returned a {type(out).__name__}, not a pair. "
            + _describe_call(with_stats, state)
          )
        if with_stats:
          loss, rest = out
          stats, aux = rest if has_aux else (rest, None)
          check_aux_prefix(aux_reduction, aux)
          return loss, (stats, aux)
        check_aux_prefix(aux_reduction, out[1])
        return out
      if isinstance(out, tuple | list | dict):
        raise ValueError(
          f"loss_fn returned a {type(out).__name__}, not a scalar loss (pass has_aux=True for "
          f"(loss, aux)). {_describe_call(with_stats, state)}"
        )
      return out, None

    grad_fn = perturbed_value_and_grad(
      checked_loss,
      batch_argnums=batched,
      aux_reduction=("mean", aux_reduction) if with_stats else aux_reduction,
      **options,
    )
    args = (state.batch_stats, *batch) if with_stats else batch
    (loss, out), grads = grad_fn(state.params, state.opt_state, *args, **kwargs)
    if with_stats:
      batch_stats, aux = out
      if axis_name is not None:
        batch_stats = jax.tree.map(
          lambda x: jax.lax.pmean(x, axis_name) if is_inexact(x) else x, batch_stats
        )
      new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    else:
      aux = out
      new_state = state.apply_gradients(grads=grads)
    return new_state, ((loss, aux) if has_aux else loss)

  return step
