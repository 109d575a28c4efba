"""Where every random number of an fSGLD step comes from.

One typed key lives in :class:`~fsgld_optax.FSGLDState` and never changes. Step ``k`` derives
its two streams from it, so :func:`~fsgld_optax.perturbed_value_and_grad` (which draws the
weight perturbations ε) and ``update`` (which draws the Langevin noise ξ) agree on step ``k``
without the user passing anything::

    step_key        = fold_in(rng_key, k)
    perturbation    = fold_in(step_key, 0)   # ε: split into n keys, one per perturbation
    langevin        = fold_in(step_key, 1)   # ξ

Each leaf gets its own key (``optax.tree.split_key_like``), so draws never ravel the
pytree: they keep each leaf's dtype and shape, and under ``jit`` with the default
``jax_threefry_partitionable`` they are computed shard by shard, the same numbers on any
device count.

Distributions (all standardised: mean 0, variance 1):

- ``"gaussian"``: ``jax.random.normal`` (32 random bits per element plus an inverse CDF).
- ``"rademacher"``: ±1 from one random bit per element, 32 elements per random word.
- ``"binomial"``: ``(2 K − 8) / √8`` with ``K ~ Binomial(8, ½)`` the popcount of one random
  byte, 4 elements per random word; kurtosis ``3 − 2/8 = 2.75`` (the Gaussian's is 3).

The packed draws unpack along the last axis whose length is a multiple of the elements per
word, so a leaf sharded along any axis keeps its shards local; a leaf with no such axis
(a bias of odd length, a scalar) spends one word per element.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
import optax

Distribution = Literal["gaussian", "rademacher", "binomial"]
PerturbationDistribution = Literal["gaussian", "rademacher"]
LangevinDistribution = Literal["gaussian", "binomial"]

_PERTURBATION_STREAM = 0
_LANGEVIN_STREAM = 1


def canonical_key(key: int | jax.Array) -> jax.Array:
  """Returns a typed PRNG key from an int seed, a typed key or a legacy ``uint32[2]`` key."""
  if isinstance(key, bool | np.bool_):
    raise TypeError(f"key must be an int seed or a jax.random.key, got {key!r}.")
  if isinstance(key, int | np.integer):
    return jax.random.key(int(key))
  if not isinstance(key, jax.Array | np.ndarray):
    raise TypeError(f"key must be an int seed or a jax.random.key, got {type(key).__name__}.")
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape:
      raise ValueError(f"key must be a single key, got a key array of shape {key.shape}.")
    return key
  if key.dtype == jnp.uint32 and key.shape == (2,):
    return jax.random.wrap_key_data(key)
  if jnp.issubdtype(key.dtype, jnp.integer) and key.shape == ():
    return jax.random.key(key)
  raise TypeError(
    "key must be an int seed, a typed jax.random.key or a legacy uint32[2] key; got an "
    f"array of dtype {key.dtype} and shape {key.shape}."
  )


def perturbation_key(rng_key: jax.Array, count: jax.Array) -> jax.Array:
  """The key of step ``count``'s weight perturbations ε."""
  return jax.random.fold_in(jax.random.fold_in(rng_key, count), _PERTURBATION_STREAM)


def langevin_key(rng_key: jax.Array, count: jax.Array) -> jax.Array:
  """The key of step ``count``'s Langevin noise ξ."""
  return jax.random.fold_in(jax.random.fold_in(rng_key, count), _LANGEVIN_STREAM)


def check_distribution(name: str, value: str, allowed: Any) -> None:
  """Raises a ``ValueError`` naming ``name`` unless ``value`` is one of ``allowed``."""
  choices = get_args(allowed)
  if value not in choices:
    raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def is_inexact(leaf: Any) -> bool:
  """Whether a leaf is a floating or complex array (the leaves fSGLD moves)."""
  return jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)


def _packed_bits(key: jax.Array, shape: tuple[int, ...], width: int) -> jax.Array:
  """``uint32`` array of ``shape`` whose low ``width`` bits are uniform random bits."""
  per_word = 32 // width
  mask = jnp.uint32((1 << width) - 1)
  axes = [a for a, d in enumerate(shape) if d > 0 and d % per_word == 0]
  if not axes:
    return jax.random.bits(key, shape, jnp.uint32) & mask
  axis = axes[-1]
  word_shape = (*shape[:axis], shape[axis] // per_word, *shape[axis + 1 :])
  words = jnp.expand_dims(jax.random.bits(key, word_shape, jnp.uint32), axis + 1)
  shifts = jnp.arange(per_word, dtype=jnp.uint32) * jnp.uint32(width)
  shifts = shifts.reshape((1,) * (axis + 1) + (per_word,) + (1,) * (len(shape) - axis - 1))
  return ((words >> shifts) & mask).reshape(shape)


def _gaussian(key: jax.Array, leaf: jax.Array) -> jax.Array:
  return jax.random.normal(key, leaf.shape, leaf.dtype)


def _rademacher(key: jax.Array, leaf: jax.Array) -> jax.Array:
  bits = _packed_bits(key, leaf.shape, 1)
  return (2 * bits.astype(jnp.int32) - 1).astype(leaf.dtype)


def _binomial(key: jax.Array, leaf: jax.Array) -> jax.Array:
  count = jax.lax.population_count(_packed_bits(key, leaf.shape, 8)).astype(jnp.int32)
  return ((2 * count - 8).astype(jnp.float32) * np.float32(1 / np.sqrt(8))).astype(leaf.dtype)


_SAMPLERS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
  "gaussian": _gaussian,
  "rademacher": _rademacher,
  "binomial": _binomial,
}


def standard_noise_like(key: jax.Array, tree: Any, distribution: Distribution) -> Any:
  """Mean-0, variance-1 draws shaped like each floating leaf of ``tree``.

  Leaves that are not floating (integer or boolean arrays) get zeros, so adding scaled
  noise leaves them unchanged.
  """
  sampler = _SAMPLERS[distribution]
  keys = optax.tree.split_key_like(key, tree)
  return jax.tree.map(
    lambda leaf, k: sampler(k, leaf) if is_inexact(leaf) else jnp.zeros_like(leaf), tree, keys
  )
