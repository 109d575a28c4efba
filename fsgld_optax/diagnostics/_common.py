"""Shared types and helpers: random-key canonicalisation and averaging over data chunks.

Every diagnostic in this subpackage evaluates either a closure ``loss_fn(params)`` or, when a
``batches`` argument is given, ``loss_fn(params, batch)`` on each chunk of a dataset. This
module holds the one place that decides how chunks are traversed and averaged:

* ``batches=None``: the closure is called as ``loss_fn(params)``.
* ``batches`` is a Python ``list``: each element is one batch (any pytree). Batches may differ
  in size; results are averaged with weights proportional to the leading-axis length of each
  batch's first leaf. The loop is unrolled at trace time, so keep such lists short.
* Any other pytree: every leaf carries a leading *chunk* axis (e.g. ``x`` of shape
  ``(num_chunks, chunk_size, ...)``). Chunks are visited one at a time with
  :func:`jax.lax.scan`, so memory stays that of a single chunk, and results are averaged with
  equal weights, which is exact when all chunks have the same size.

``loss_fn(params, batch)`` must return the *mean* loss over the examples in ``batch``; the
weighted average then equals the mean loss (or its derivatives) over the whole dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp

PyTree: TypeAlias = Any
"""A pytree of arrays, e.g. model parameters or a batch of data."""

KeyLike: TypeAlias = jax.Array | int
"""A typed key from :func:`jax.random.key`, a raw ``uint32[2]`` key, or an integer seed
(a Python int or an integer scalar array, e.g. a traced seed under :func:`jax.jit`)."""

LossFn: TypeAlias = Callable[..., jax.Array]
"""``loss_fn(params) -> scalar``, or ``loss_fn(params, batch) -> scalar`` with ``batches``."""


def _num_examples(batch: PyTree) -> int:
  leaves = jax.tree.leaves(batch)
  if not leaves or jnp.ndim(leaves[0]) == 0:
    raise ValueError(
      "Each batch in a list of batches needs array leaves with a leading example axis; "
      "the size of the first leaf weights the batch in the average."
    )
  return int(jnp.shape(leaves[0])[0])


def average_over_batches(fn: Callable[[PyTree], PyTree], batches: PyTree) -> PyTree:
  """Averages ``fn(batch)`` over the chunks of ``batches`` (see the module docstring).

  Args:
    fn: maps one batch to a pytree of arrays.
    batches: a ``list`` of batches, or a pytree whose leaves have a leading chunk axis.

  Returns:
    The (size-weighted, for a list) mean of ``fn(batch)`` over the chunks.
  """
  if isinstance(batches, list):
    if not batches:
      raise ValueError("`batches` is an empty list; pass at least one batch.")
    sizes = [_num_examples(batch) for batch in batches]
    total = sum(sizes)
    results = [fn(batch) for batch in batches]
    return jax.tree.map(
      lambda *leaves: sum(leaf * (size / total) for leaf, size in zip(leaves, sizes, strict=True)),
      *results,
    )

  leaves = jax.tree.leaves(batches)
  if not leaves or any(jnp.ndim(leaf) == 0 for leaf in leaves):
    raise ValueError(
      "`batches` must be a list of batches or a pytree of arrays stacked along a leading "
      "chunk axis."
    )
  num_chunks = jnp.shape(leaves[0])[0]
  if any(jnp.shape(leaf)[0] != num_chunks for leaf in leaves):
    raise ValueError("All leaves of stacked `batches` need the same leading chunk axis.")

  first = jax.tree.map(lambda leaf: leaf[0], batches)
  out_shape = jax.eval_shape(fn, first)
  init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape)

  def body(carry: PyTree, batch: PyTree) -> tuple[PyTree, None]:
    return jax.tree.map(jnp.add, carry, fn(batch)), None

  total, _ = jax.lax.scan(body, init, batches)
  return jax.tree.map(lambda leaf: leaf / num_chunks, total)


def mean_loss(loss_fn: LossFn, params: PyTree, batches: PyTree | None) -> jax.Array:
  """Evaluates ``loss_fn`` at ``params``, averaged over ``batches`` when given."""
  if batches is None:
    return loss_fn(params)
  return average_over_batches(lambda batch: loss_fn(params, batch), batches)
