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
weighted average then equals the mean loss (or its derivatives) over the whole dataset. A batch
with no examples has no mean loss (``0 / 0``), so a zero-size batch, an empty list and a
stacked pytree with no chunks are rejected with a ``ValueError`` naming ``batches``.

It also holds the argument checks of every public diagnostic, so that a bad argument raises
an error naming it at the call, before any tracing: counts are Python (or NumPy) ints, never
booleans or floats; flags are booleans; a scalar width is a positive, finite real number
(``bfloat16`` and other low-precision scalars are checked like any other), representable in
the parameters' dtype; a tangent or direction has the tree structure and leaf shapes of the
parameters (no broadcasting); parameters are real floating arrays.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from fsgld_optax._randomness import canonical_key

PyTree: TypeAlias = Any
"""A pytree of arrays, e.g. model parameters or a batch of data."""

KeyLike: TypeAlias = jax.Array | int
"""A typed key from :func:`jax.random.key`, a raw ``uint32[2]`` key, or an integer seed
(a Python int or an integer scalar array, e.g. a traced seed under :func:`jax.jit`)."""

LossFn: TypeAlias = Callable[..., jax.Array]
"""``loss_fn(params) -> scalar``, or ``loss_fn(params, batch) -> scalar`` with ``batches``."""


def _num_examples(batch: PyTree, index: int) -> int:
  leaves = jax.tree.leaves(batch)
  if not leaves or jnp.ndim(leaves[0]) == 0:
    raise ValueError(
      "Each batch in a list of batches needs array leaves with a leading example axis; "
      f"the size of the first leaf weights the batch in the average. batches[{index}] has "
      f"{'no array leaves' if not leaves else 'a scalar first leaf'}."
    )
  size = int(jnp.shape(leaves[0])[0])
  if size == 0:
    raise ValueError(
      f"batches[{index}] has no examples (its first leaf has shape {jnp.shape(leaves[0])}); "
      "the mean loss over an empty batch is undefined. Drop empty batches."
    )
  return size


def check_batches(batches: PyTree | None) -> None:
  """Raises a ``ValueError`` naming ``batches`` unless it is ``None`` or a valid chunking.

  A list must be non-empty, with every batch holding at least one example (the leading axis
  of its first leaf). A stacked pytree needs array leaves with a common leading chunk axis of
  positive length, and chunks with at least one example (the second axis of the first leaf,
  where it has one).
  """
  if batches is None:
    return
  if isinstance(batches, list):
    if not batches:
      raise ValueError("`batches` is an empty list; pass at least one batch.")
    for index, batch in enumerate(batches):
      _num_examples(batch, index)
    return
  leaves = jax.tree.leaves(batches)
  if not leaves or any(jnp.ndim(leaf) == 0 for leaf in leaves):
    raise ValueError(
      "`batches` must be a list of batches or a pytree of arrays stacked along a leading "
      "chunk axis."
    )
  num_chunks = jnp.shape(leaves[0])[0]
  if any(jnp.shape(leaf)[0] != num_chunks for leaf in leaves):
    raise ValueError(
      "All leaves of stacked `batches` need the same leading chunk axis; got shapes "
      f"{[jnp.shape(leaf) for leaf in leaves]}."
    )
  if num_chunks == 0:
    raise ValueError(
      "Stacked `batches` has no chunks (leading axis of length 0); pass at least one chunk."
    )
  first = jnp.shape(leaves[0])
  if len(first) >= 2 and first[1] == 0:
    raise ValueError(
      f"Stacked `batches` has chunks with no examples (first leaf of shape {first}); the mean "
      "loss over an empty chunk is undefined."
    )


def average_over_batches(fn: Callable[[PyTree], PyTree], batches: PyTree) -> PyTree:
  """Averages ``fn(batch)`` over the chunks of ``batches`` (see the module docstring).

  Args:
    fn: maps one batch to a pytree of arrays.
    batches: a ``list`` of batches, or a pytree whose leaves have a leading chunk axis.

  Returns:
    The (size-weighted, for a list) mean of ``fn(batch)`` over the chunks.
  """
  check_batches(batches)
  if isinstance(batches, list):
    sizes = [_num_examples(batch, index) for index, batch in enumerate(batches)]
    total = sum(sizes)
    results = [fn(batch) for batch in batches]
    return jax.tree.map(
      lambda *leaves: sum(leaf * (size / total) for leaf, size in zip(leaves, sizes, strict=True)),
      *results,
    )

  leaves = jax.tree.leaves(batches)
  num_chunks = jnp.shape(leaves[0])[0]

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


def _is_boolean(value: Any) -> bool:
  dtype = getattr(value, "dtype", None)
  return isinstance(value, bool | np.bool_) or (isinstance(dtype, np.dtype) and dtype == np.bool_)


def check_callable(name: str, value: Any) -> None:
  """Raises a ``TypeError`` naming ``name`` unless ``value`` is callable."""
  if not callable(value):
    raise TypeError(f"{name} must be callable, got {value!r}.")


def check_count(name: str, value: Any, *, minimum: int, why: str = "") -> int:
  """``value`` as a Python int; a ``ValueError`` naming ``name`` unless it is an int >= minimum.

  Python and NumPy integers and concrete integer scalar arrays pass; booleans, floats (even
  integral ones such as ``2.0``), strings, ``None`` and traced values do not.
  """
  if _is_boolean(value) or isinstance(value, float | complex | str | bytes) or value is None:
    count = None
  else:
    try:
      count = operator.index(value)
    except TypeError:  # Includes tracers, which cannot be converted to an int.
      count = None
  if count is None or count < minimum:
    raise ValueError(f"{name} must be a (concrete) int >= {minimum}{why}, got {value!r}.")
  return count


def check_optional_count(name: str, value: Any, *, minimum: int = 1) -> int | None:
  """Like :func:`check_count`, with ``None`` allowed (and returned)."""
  return None if value is None else check_count(name, value, minimum=minimum)


def check_bool(name: str, value: Any) -> bool:
  """``value`` as a Python bool; a ``TypeError`` naming ``name`` unless it is a boolean."""
  if not isinstance(value, bool | np.bool_):
    raise TypeError(f"{name} must be a bool, got {value!r}.")
  return bool(value)


def check_real_dtype(name: str, value: Any) -> jax.Array:
  """``value`` as an array; a ``ValueError`` naming ``name`` unless it is real and numeric.

  Integer and floating dtypes pass (``bfloat16`` included); booleans, complex numbers,
  strings, ``None`` and other objects do not.
  """
  if value is None or isinstance(value, str | bytes) or callable(value) or _is_boolean(value):
    raise ValueError(f"{name} must be real (integer or floating), got {value!r}.")
  try:
    array = jnp.asarray(value)
  except (TypeError, ValueError) as error:
    raise ValueError(f"{name} must be real (integer or floating), got {value!r}.") from error
  dtype = array.dtype
  if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
    raise ValueError(f"{name} must be real (integer or floating), got dtype {dtype}.")
  return array


def check_positive_scalar(name: str, value: Any, dtype: Any) -> jax.Array:
  """``value`` as a scalar of ``dtype``; a ``ValueError`` naming ``name`` unless it is > 0.

  A concrete value must be a real scalar that is positive and finite once cast to ``dtype``
  (a value that overflows to inf or underflows to 0 in ``dtype`` is rejected). A traced value
  cannot be checked; it is returned cast, and the caller decides what a bad value gives.
  """
  array = check_real_dtype(name, value)
  if array.shape != ():
    raise ValueError(f"{name} must be a scalar, got an array of shape {array.shape}.")
  cast = array.astype(dtype)
  try:
    x = float(np.asarray(cast, np.float64))
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return cast  # Traced: cannot be checked here.
  if not (math.isfinite(x) and x > 0):
    original = float(np.asarray(array, np.float64))
    cast_note = "" if x == original else f", which is {x} in {jnp.dtype(dtype).name}"
    raise ValueError(
      f"{name} must be positive and finite in {jnp.dtype(dtype).name}, got {original}{cast_note}."
    )
  return cast


def check_key(key: Any) -> jax.Array:
  """A typed key from ``key`` (see :data:`KeyLike`); errors name ``key``.

  Integer seeds must fit in 64 bits (a signed 64-bit integer), the range of
  :func:`jax.random.key`.
  """
  if isinstance(key, int) and not isinstance(key, bool) and not -(2**63) <= key < 2**63:
    raise ValueError(f"key must be an int seed in [-2**63, 2**63) or a jax.random.key, got {key}.")
  return canonical_key(key)


def _path(path: tuple[Any, ...]) -> str:
  return jax.tree_util.keystr(path)


def check_params(params: PyTree) -> None:
  """Raises a ``ValueError`` naming ``params`` unless its leaves are real floating arrays."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  if not leaves:
    raise ValueError("params has no array leaves; pass a pytree of real floating arrays.")
  for path, leaf in leaves:
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise ValueError(
        f"params must be a pytree of real floating arrays; the leaf params{_path(path)} has "
        f"dtype {dtype}."
      )


def check_like(name: str, tree: PyTree, params: PyTree) -> PyTree:
  """``tree`` cast to the dtypes of ``params``; a ``ValueError`` naming ``name`` on a mismatch.

  ``tree`` must have the tree structure of ``params`` and, leaf by leaf, the same shape (no
  broadcasting) and a real numeric dtype.
  """
  tree_def = jax.tree.structure(tree)
  params_def = jax.tree.structure(params)
  if tree_def != params_def:
    raise ValueError(
      f"{name} must have the tree structure of params; got {tree_def}, expected {params_def}."
    )
  paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]

  def cast(path: tuple[Any, ...], leaf: Any, p: Any) -> jax.Array:
    where = f"{name}{_path(path)}"
    array = check_real_dtype(where, leaf)
    if array.shape != jnp.shape(p):
      raise ValueError(
        f"{where} has shape {array.shape}, but the parameter has shape {jnp.shape(p)}; "
        "shapes must match exactly (no broadcasting)."
      )
    return array.astype(jnp.result_type(p))

  leaves = jax.tree.leaves(tree)
  cast_leaves = [
    cast(path, leaf, p)
    for path, leaf, p in zip(paths, leaves, jax.tree.leaves(params), strict=True)
  ]
  return jax.tree.unflatten(params_def, cast_leaves)


def check_steps(name: str, values: Any) -> jax.Array:
  """``values`` as a one-dimensional real array; a ``ValueError`` naming ``name`` otherwise."""
  array = check_real_dtype(name, values)
  if array.ndim != 1:
    raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}.")
  return array
