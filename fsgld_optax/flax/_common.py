"""Argument handling shared by the NNX and Linen helpers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np


def check_options(
  *,
  has_aux: Any,
  split_batch: Any,
  antithetic: Any,
  per_device_perturbations: Any,
  axis_name: Any,
  batch_argnums: Any,
) -> None:
  """Raises an error naming the option unless the helpers' own options have the right types."""
  flags = dict(
    has_aux=has_aux,
    split_batch=split_batch,
    antithetic=antithetic,
    per_device_perturbations=per_device_perturbations,
  )
  for name, value in flags.items():
    if not isinstance(value, bool | np.bool_):
      raise TypeError(f"{name} must be a bool, got {value!r}.")
  names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
  if axis_name is not None and not (names and all(isinstance(a, str) for a in names)):
    raise TypeError(f"axis_name must be None, a str or a tuple of str, got {axis_name!r}.")
  _argnums(batch_argnums)


def _argnums(batch_argnums: Any) -> tuple[int, ...] | None:
  if batch_argnums is None:
    return None
  is_int = lambda i: isinstance(i, int | np.integer) and not isinstance(i, bool | np.bool_)
  if is_int(batch_argnums):
    return (int(batch_argnums),)
  if (
    isinstance(batch_argnums, str | bytes)
    or not isinstance(batch_argnums, Sequence)
    or not all(is_int(i) for i in batch_argnums)
  ):
    raise ValueError(
      f"batch_argnums must be None, an int or a sequence of ints, got {batch_argnums!r}."
    )
  return tuple(int(i) for i in batch_argnums)


def user_batch_argnums(
  batch_argnums: int | Sequence[int] | None, args: Sequence[Any], what: str
) -> tuple[int, ...]:
  """The batched positions among ``args``, sorted and non-negative; all of them for ``None``.

  Raises:
    ValueError: naming ``batch_argnums`` for a value that is not an int or a sequence of
      ints, or that names a position outside ``args``.
  """
  num_args = len(args)
  argnums = _argnums(batch_argnums)
  if argnums is None:
    return tuple(range(num_args))
  for i in argnums:
    if not -num_args <= i < num_args:
      raise ValueError(
        f"batch_argnums={batch_argnums!r} names argument {i}, but the step got {num_args} {what}."
      )
  return tuple(sorted({i % num_args for i in argnums}))


def check_batch_to_split(
  args: Sequence[Any], batched: Sequence[int], n: int, call: str, what: str
) -> None:
  """Raises a ``ValueError`` unless ``split_batch`` can split ``args[i]`` for ``i in batched``.

  There must be at least one array to split: a loss that closes over its batch (as in Flax's
  Linen examples) would otherwise cost n full-batch gradients instead of one. Every leaf of a
  batched argument needs a leading axis that n divides; the error names the argument by its
  position among the step's own arguments (``what``).
  """
  if not jax.tree.leaves([args[i] for i in batched]):
    raise ValueError(
      f"split_batch=True with n_perturbations={n} needs the batch passed to the step, as "
      f"{call}, in the arguments named by batch_argnums; none of them holds an array. A loss "
      f"that closes over its batch would silently cost {n} full-batch gradients instead of "
      "one: pass the batch as an argument, or use split_batch=False."
    )
  for i in batched:
    for path, leaf in jax.tree_util.tree_flatten_with_path(args[i])[0]:
      shape = np.shape(leaf)
      if not shape or shape[0] % n:
        raise ValueError(
          f"split_batch=True with n_perturbations={n} splits every leaf of the batched "
          f"arguments along its leading axis, which n must divide; {what} {i} has the leaf "
          f"{jax.tree_util.keystr(path) or '(the argument itself)'} of shape {shape}. Leave "
          "it out of batch_argnums, or pass it as a keyword argument (never split)."
        )


def check_aux_prefix(aux_reduction: Any, aux: Any) -> None:
  """Raises a ``ValueError`` naming ``aux_reduction`` unless it is a pytree prefix of ``aux``.

  Checked on the user's own ``aux``, before the helper pairs it with the model state it
  carries next to it, so that the error shows the user's structures.
  """
  if aux_reduction is None or isinstance(aux_reduction, str):
    return
  is_spec = lambda x: x is None or isinstance(x, str)
  try:
    jax.tree.map(lambda spec, sub: None, aux_reduction, aux, is_leaf=is_spec)
  except ValueError as error:
    raise ValueError(
      f"aux_reduction={aux_reduction!r} is not a pytree prefix of the aux that loss_fn "
      f"returns (structure {jax.tree.structure(aux)}): {error}"
    ) from error
