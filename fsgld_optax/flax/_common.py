"""Argument handling shared by the NNX and Linen helpers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np


def user_batch_argnums(
  batch_argnums: int | Sequence[int] | None, args: Sequence[Any], what: str
) -> tuple[int, ...]:
  """The batched positions among ``args``, sorted and non-negative; all of them for ``None``.

  Raises:
    ValueError: naming ``batch_argnums`` for a value that is not an int or a sequence of
      ints, or that names a position outside ``args``.
  """
  num_args = len(args)
  if batch_argnums is None:
    return tuple(range(num_args))
  argnums = (batch_argnums,) if isinstance(batch_argnums, int | np.integer) else batch_argnums
  if (
    not isinstance(argnums, Sequence)
    or isinstance(argnums, str)
    or not all(
      isinstance(i, int | np.integer) and not isinstance(i, bool | np.bool_) for i in argnums
    )
    or isinstance(batch_argnums, bool | np.bool_)
  ):
    raise ValueError(
      f"batch_argnums must be None, an int or a sequence of ints, got {batch_argnums!r}."
    )
  for i in argnums:
    if not -num_args <= i < num_args:
      raise ValueError(
        f"batch_argnums={batch_argnums!r} names argument {i}, but the step got {num_args} {what}."
      )
  return tuple(sorted({int(i) % num_args for i in argnums}))


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
