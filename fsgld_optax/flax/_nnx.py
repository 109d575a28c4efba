"""Perturbed gradients for Flax NNX modules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from fsgld_optax._perturb import perturbed_value_and_grad
from fsgld_optax._randomness import PerturbationDistribution
from fsgld_optax.flax._common import (
  check_aux_prefix,
  check_batch_to_split,
  check_options,
  user_batch_argnums,
)


def _pure_opt_state(optimizer_or_state: Any) -> optax.OptState:
  """The optimizer state as plain arrays, from an ``nnx.Optimizer`` or its ``opt_state``."""
  if isinstance(optimizer_or_state, nnx.Optimizer):
    optimizer_or_state = optimizer_or_state.opt_state
  return nnx.as_pure(optimizer_or_state)


def _is_graph_node(x: Any) -> bool:
  """NNX objects with state that a forward pass may update: modules, ``nnx.Rngs``, metrics..."""
  return isinstance(x, nnx.Pytree | nnx.Variable)


@jax.tree_util.register_static
class _NodeSlot:
  """Stands in for the ``index``-th graph node of the arguments: a pytree with no leaves.

  The wrapper may split, vmap and differentiate the arguments; a slot passes through all of
  that untouched, and the node's state travels separately (see :func:`nnx_value_and_grad`).
  """

  def __init__(self, index: int) -> None:
    self.index = index

  def __hash__(self) -> int:
    return hash(self.index)

  def __eq__(self, other: object) -> bool:
    return isinstance(other, _NodeSlot) and other.index == self.index


def _extract_nodes(tree: Any) -> tuple[Any, list[Any]]:
  """``tree`` with every graph node replaced by a :class:`_NodeSlot`, and the nodes in order."""
  nodes: list[Any] = []

  def slot(x: Any) -> Any:
    if not _is_graph_node(x):
      return x
    nodes.append(x)
    return _NodeSlot(len(nodes) - 1)

  return jax.tree.map(slot, tree, is_leaf=_is_graph_node), nodes


def _insert_nodes(tree: Any, nodes: Sequence[Any]) -> Any:
  is_slot = lambda x: isinstance(x, _NodeSlot)
  return jax.tree.map(lambda x: nodes[x.index] if is_slot(x) else x, tree, is_leaf=is_slot)


def _fold_streams(root: Any, index: jax.Array) -> list[tuple[nnx.RngStream, jax.Array]]:
  """Folds ``index`` into the key of every ``nnx.RngStream`` under ``root`` (not for index 0).

  Returns the streams with their original keys, to restore once the loss has run.
  """
  saved = []
  for _, node in nnx.iter_graph(root):
    if isinstance(node, nnx.RngStream):
      key = node.key[...]
      saved.append((node, key))
      node.key[...] = jax.lax.cond(
        index == 0, lambda key=key: key, lambda key=key: jax.random.fold_in(key, index)
      )
  return saved


def nnx_value_and_grad(
  loss_fn: Callable[..., Any],
  *,
  n_perturbations: int = 1,
  has_aux: bool = False,
  wrt: Any = nnx.Param,
  split_batch: bool = False,
  batch_argnums: int | Sequence[int] | None = None,
  aux_reduction: Any = None,
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

  Only the variables of ``model`` matched by ``wrt`` (and seen by the optimizer's source of
  perturbations) are perturbed and differentiated; ``nnx.BatchStat``, RNG state and any
  other variable are not.

  **Graph-node arguments.** Like ``nnx.value_and_grad``, the function accepts NNX objects
  (``nnx.Rngs``, modules, metrics, ``nnx.Variable``) among ``args`` and ``kwargs``, at any
  depth of their pytrees. They are never perturbed, differentiated or split by
  ``split_batch``; the loss runs on copies of them, and their updated state (RNG counters,
  statistics) is written back after the call, combined over the perturbations as below.

  **State written back.** Forward passes may update variables other than the parameters
  (BatchNorm running statistics, RNG counters), of ``model`` or of a graph-node argument.
  After the call they hold the combination of the n updated states: floating variables are
  averaged over the perturbations and all others (integer counters, keys) are taken from the
  first perturbation, which for counters equals a single forward pass. For
  ``nnx.BatchNorm``, whose running statistics update as :math:`r \leftarrow m\, r + (1 - m)\,
  s_i` with the batch statistic :math:`s_i` (mean or variance) of perturbation ``i``, the
  mean of the n updated values is

  .. math::

    \frac{1}{n} \sum_{i=1}^{n} \bigl(m\, r + (1 - m)\, s_i\bigr)
      = m\, r + (1 - m)\, \frac{1}{n} \sum_{i=1}^{n} s_i,

  one running-average update with the batch statistics averaged over the perturbations.
  Parameters of ``model`` are left unchanged: apply the returned gradient with
  ``optimizer.update(model, grads)``.

  **BatchNorm under** ``split_batch``. Each perturbation normalises its activations with the
  statistics of its own ``1/n`` slice (as "ghost batch normalisation" does), so the forward
  pass differs from one on the whole batch, more so for small slices. The running mean is
  updated with the mean of the slice means, which is the full-batch mean; the running
  variance with the mean of the within-slice variances, which is smaller than the
  full-batch variance by the variance of the slice means.

  **Dropout and other randomness.** Without ``split_batch`` the n perturbations see the same
  batch and share the RNG state, so ``nnx.Dropout`` draws the same masks in all of them (the
  perturbations are then the only difference between the n evaluations); the counters
  advance as for one forward pass. With ``split_batch`` each slice gets its own dropout
  stream: for slice ``i > 0`` the index is folded into the key of every ``nnx.RngStream``
  of ``model`` and of the graph-node arguments (``key ← fold_in(key, i)``) while the loss
  runs, and slice 0 uses the keys unchanged, so with n = 1 the masks are those of
  ``nnx.value_and_grad``. The keys written back are the original ones and the counters
  advance as for one forward pass, so the next step draws fresh masks. Under ``axis_name``
  every device draws the same masks unless the RNG state differs per device.

  **Antithetic pairs under** ``split_batch``. Perturbations ``i`` and ``i + n/2`` (``+ε``
  and ``−ε``) see different slices of the batch, so the odd-order terms of the Taylor
  expansion cancel only in expectation over the data, not within the step.

  Args:
    loss_fn: ``loss_fn(model, *args, **kwargs) -> loss`` (or ``(loss, aux)`` with
      ``has_aux``), with a scalar ``loss``.
    n_perturbations: the number n ≥ 1 of perturbations averaged per step.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``; ``aux_reduction`` says how the n
      perturbations' ``aux`` values are combined.
    wrt: an ``nnx`` filter selecting the variables to perturb and differentiate; it must match
      the ``wrt`` of the ``nnx.Optimizer``.
    split_batch: give perturbation ``i`` the ``i``-th ``1/n`` slice (along the leading axis)
      of every leaf of the batched arguments (see ``batch_argnums``), so that n
      perturbations cost one full-batch gradient. Raises if no batched argument holds an
      array (a loss that closes over its batch would silently cost n full-batch gradients).
    batch_argnums: which positional arguments after ``(model, optimizer)`` are batched, for
      ``split_batch``; by default all of them. Graph nodes inside them are never split, and
      an argument that is itself a graph node cannot be named. Keyword arguments are never
      split.
    aux_reduction: how ``aux`` is combined over the perturbations: ``"mean"``,
      ``"concat"`` (per-example leaves, e.g. logits, concatenated along axis 0 in slice
      order: the whole batch's order with ``split_batch``), ``"stack"`` (a leading axis of
      length n) or a pytree prefix of ``aux`` with those strings as leaves; see
      :func:`fsgld_optax.perturbed_value_and_grad`. ``None`` (default): ``"mean"``, except
      that under ``split_batch`` (n > 1) an ``aux`` leaf with a shape raises an error asking
      for a choice. The state written back to ``model`` and the graph nodes is always
      averaged, as above.
    antithetic: use ±ε pairs (n even); see the note on ``split_batch`` above.
    axis_name: inside ``shard_map``/``pmap``, average the loss and gradient over this axis.
      The state written back to ``model`` is per device.
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
    ``f(model, optimizer, *args, **kwargs) -> (loss, grads)`` (or ``((loss, aux), grads)``),
    where ``optimizer`` is the ``nnx.Optimizer`` whose ``tx`` holds the source of
    perturbations (:func:`fsgld_optax.fsgld`, :func:`fsgld_optax.rwp` chained in front of
    another optimizer, ...; found with :func:`fsgld_optax.find_fsgld_state`) or its
    ``opt_state``, and ``grads`` is an ``nnx.State`` of the ``wrt`` variables, ready for
    ``optimizer.update(model, grads)``. Call it eagerly or inside ``nnx.jit``.

  Raises:
    TypeError: for a flag (``has_aux``, ``split_batch``, ``antithetic``,
      ``per_device_perturbations``) that is not a bool, or an ``axis_name`` that is not a
      string or tuple of strings.
    ValueError: for invalid options (as :func:`fsgld_optax.perturbed_value_and_grad`); when
      called, for a ``batch_argnums`` out of range or naming a graph node, or ``split_batch``
      with no batch passed (only graph nodes, or a loss that closes over its batch).

  Examples:
    >>> import jax, jax.numpy as jnp, optax, fsgld_optax
    >>> from flax import nnx
    >>> import fsgld_optax.flax
    >>> class Net(nnx.Module):
    ...   def __init__(self, rngs):
    ...     self.dense = nnx.Linear(3, 4, rngs=rngs)
    ...     self.norm = nnx.BatchNorm(4, rngs=rngs)
    ...     self.dropout = nnx.Dropout(0.1)
    ...   def __call__(self, x, rngs):
    ...     return self.dropout(self.norm(self.dense(x)), rngs=rngs).sum(axis=-1)
    >>> model = Net(nnx.Rngs(0))
    >>> optimizer = nnx.Optimizer(
    ...     model, fsgld_optax.fsgld(learning_rate=0.1, beta=1e8, key=0), wrt=nnx.Param)
    >>> def loss_fn(model, x, y, rngs):
    ...   out = model(x, rngs)
    ...   return jnp.mean((out - y) ** 2), out
    >>> grad_fn = fsgld_optax.flax.nnx_value_and_grad(
    ...     loss_fn, n_perturbations=2, has_aux=True, split_batch=True, batch_argnums=(0, 1),
    ...     aux_reduction="concat")
    >>> @nnx.jit
    ... def train_step(model, optimizer, x, y, rngs):
    ...   (loss, out), grads = grad_fn(model, optimizer, x, y, rngs)
    ...   optimizer.update(model, grads)
    ...   return loss, out
    >>> x, y, rngs = jnp.ones((8, 3)), jnp.zeros(8), nnx.Rngs(dropout=1)
    >>> for _ in range(3):
    ...   loss, out = train_step(model, optimizer, x, y, rngs)
    >>> print(out.shape, int(rngs.dropout.count[...]))
    (8,) 3
    >>> print(int(fsgld_optax.find_fsgld_state(nnx.as_pure(optimizer.opt_state)).count))
    3

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
    split_batch=split_batch,
    antithetic=antithetic,
    axis_name=axis_name,
    per_device_perturbations=per_device_perturbations,
    perturbation=perturbation,
    perturbation_batch_size=perturbation_batch_size,
  )
  # Validates the options now rather than at the first call.
  perturbed_value_and_grad(loss_fn, has_aux=True, aux_reduction=(aux_reduction, "mean"), **options)
  fold = split_batch and n_perturbations > 1

  def wrapped(model: nnx.Module, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
    (args, kwargs), nodes = _extract_nodes((args, kwargs))
    roots = (model, *nodes)
    # One split of the model and the graph-node arguments together keeps shared variables
    # shared. Only the model's `wrt` variables (path[0] == 0) are parameters.
    in_model = lambda path, _: path[0] == 0
    graphdef, params, rest = nnx.split(roots, nnx.All(wrt, in_model), ...)
    model_params = params[0]
    optimizer_wrt = (
      getattr(optimizer, "wrt", None) if isinstance(optimizer, nnx.Optimizer) else None
    )
    if optimizer_wrt is not None and jax.tree.structure(
      nnx.state(model, optimizer_wrt)
    ) != jax.tree.structure(model_params):
      raise ValueError(
        f"wrt={wrt!r} selects other variables than the nnx.Optimizer's "
        f"wrt={optimizer_wrt!r}; pass nnx_value_and_grad(..., wrt=...) the optimizer's filter."
      )

    def pure_loss(p: nnx.State, index: Any, *args: Any, **kwargs: Any) -> Any:
      # copy=True gives fresh variables at the current trace level, so forward passes can
      # update BatchNorm statistics and RNG counters inside the wrapper's vmap and grad.
      local = nnx.merge(graphdef, nnx.State({0: p}), rest, copy=True)
      saved = _fold_streams(local, jnp.reshape(index, ())) if fold else []
      args, kwargs = _insert_nodes((args, kwargs), local[1:])
      out = loss_fn(local[0], *args, **kwargs)
      loss, aux = out if has_aux else (out, None)
      check_aux_prefix(aux_reduction, aux)
      for stream, key in saved:  # The folded keys must not be written back.
        stream.key[...] = key
      _, _, new_rest = nnx.split(local, nnx.All(wrt, in_model), ...)
      return loss, (aux, new_rest)

    batched = ()
    if fold:
      batched = user_batch_argnums(batch_argnums, args, "args after (model, optimizer)")
      if batch_argnums is None:  # All arguments but the graph nodes.
        batched = tuple(i for i in batched if not isinstance(args[i], _NodeSlot))
      for i in batched:
        if isinstance(args[i], _NodeSlot):
          raise ValueError(
            f"batch_argnums={batch_argnums!r} names argument {i}, an NNX graph node "
            f"({type(nodes[args[i].index]).__name__}), which split_batch cannot split."
          )
      check_batch_to_split(
        args,
        batched,
        n_perturbations,
        "f(model, optimizer, *batch)",
        "argument (after model and optimizer)",
      )
      # The slice index travels as one more batched argument (index 0), so that every slice
      # knows which one it is.
      batched = (0, *(i + 1 for i in batched))
    grad_fn = perturbed_value_and_grad(
      pure_loss,
      has_aux=True,
      batch_argnums=batched,
      aux_reduction=(aux_reduction, "mean"),
      **options,
    )
    index = jnp.arange(n_perturbations) if fold else None
    (loss, (aux, new_rest)), grads = grad_fn(
      model_params, _pure_opt_state(optimizer), index, *args, **kwargs
    )
    nnx.update(roots, new_rest)
    return ((loss, aux), grads) if has_aux else (loss, grads)

  return wrapped
