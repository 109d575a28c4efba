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

- ``"gaussian"``: exactly ``jax.random.normal``'s numbers (32 random bits per element, then
  an inverse error function).
- ``"rademacher"``: ±1 from one random bit per element, 32 elements per random word;
  kurtosis 1.
- ``"binomial"``: ``(2 K − 8) / √8`` with ``K ~ Binomial(8, ½)`` the popcount of one random
  byte, 4 elements per random word; kurtosis ``3 − 2/8 = 2.75`` (the Gaussian's is 3).

The packed draws unpack along the last axis whose length is a multiple of the elements per
word, so a leaf sharded along any axis keeps its shards local; a leaf with no such axis
(a bias of odd length, a scalar) spends one word per element.

Cost. Every random word comes from :func:`random_bits`, which returns ``jax.random.bits``'s
words bit for bit (default ``threefry2x32`` keys) but as plain elementwise arithmetic, so
XLA fuses the hash into whatever consumes it: the perturbed weights ``θ + σε`` and the
update ``−λ g + √(2λ/β) ξ`` are each written in one pass, and no draw is ever stored. The
perturbed weights are then :func:`materialize`-d once, so that a consumer that broadcasts a
weight over activations (a BatchNorm scale) reads it rather than redrawing it per element.
(``jax.random`` on CPU runs the hash as a loop over four buffers of the draw's size.) A
Gaussian draw then costs a few nanoseconds per element on CPU, mostly the hash; the packed
draws hash one word per 32 or 4 elements and cost little more than reading and writing the
weights. ``benchmarks/cost.py`` measures all of this against an SGD step.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from collections.abc import Callable
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import core as jax_core

Distribution = Literal["gaussian", "rademacher", "binomial"]
PerturbationDistribution = Literal["gaussian", "rademacher"]
LangevinDistribution = Literal["gaussian", "binomial"]

_PERTURBATION_STREAM = 0
_LANGEVIN_STREAM = 1


def canonical_key(key: int | jax.Array, name: str = "key") -> jax.Array:
  """A typed PRNG key of its own from an int seed, a typed key or a legacy ``uint32[2]`` key.

  The result never shares a buffer with the caller's key, so donating a state built from it
  (``jax.jit(..., donate_argnums=...)``) leaves the caller's key usable. Building a key also
  teaches ``flax.serialization`` to store typed keys (:func:`register_key_serialization`).
  """
  key = _canonical_key(key, name)
  register_key_serialization(key)
  return key


def _canonical_key(key: int | jax.Array, name: str) -> jax.Array:
  if isinstance(key, bool | np.bool_):
    raise TypeError(f"{name} must be an int seed or a jax.random.key, got {key!r}.")
  if isinstance(key, int | np.integer):
    seed = int(key)
    if not -(2**63) <= seed < 2**63:
      raise ValueError(f"{name} must be an int seed in [-2**63, 2**63), got {seed}.")
    if 0 <= seed < 2**32:
      return jax.random.key(seed)
    # jax.random.key keeps only the low 32 bits of a seed unless jax_enable_x64 is on, so
    # 2**32 and 0 (or -1 and 2**32 - 1) would give the same chain. Seeds outside [0, 2**32)
    # fold their high word into the key of their low word instead, the same in both modes.
    unsigned = seed % 2**64
    return jax.random.fold_in(jax.random.key(unsigned & 0xFFFFFFFF), unsigned >> 32)
  if not isinstance(key, jax.Array | np.ndarray):
    raise TypeError(f"{name} must be an int seed or a jax.random.key, got {type(key).__name__}.")
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape:
      raise ValueError(f"{name} must be a single key, got a key array of shape {key.shape}.")
    return fresh_key(key)
  if key.dtype == jnp.uint32 and key.shape == (2,):
    return jax.random.wrap_key_data(jnp.array(key, copy=True))
  if jnp.issubdtype(key.dtype, jnp.integer) and key.shape == ():
    return jax.random.key(key)
  raise TypeError(
    f"{name} must be an int seed, a typed jax.random.key or a legacy uint32[2] key; got an "
    f"array of dtype {key.dtype} and shape {key.shape}."
  )


def _key_to_state_dict(key: jax.Array) -> dict[str, Any]:
  return {
    "impl": str(jax.random.key_impl(key)),
    "key_data": np.asarray(jax.random.key_data(key)),
  }


def _key_from_state_dict(target: jax.Array, state: dict[str, Any]) -> jax.Array:
  impl = state["impl"]
  impl = impl.decode() if isinstance(impl, bytes) else str(impl)
  expected = str(jax.random.key_impl(target))
  if impl != expected:
    raise ValueError(
      f"Cannot restore a typed PRNG key of implementation {impl!r} into a target key of "
      f"implementation {expected!r}."
    )
  data = jnp.asarray(state["key_data"])
  key = jax.random.wrap_key_data(data, impl=impl)
  if key.shape != target.shape:
    raise ValueError(
      f"Cannot restore a key array of shape {key.shape} into a target of shape {target.shape}."
    )
  return key


_SERIALIZABLE_KEY_TYPES: set[type] = set()


def register_key_serialization(key: jax.Array) -> None:
  """Lets ``flax.serialization`` store and restore typed PRNG keys (once per key type).

  ``flax.serialization.to_bytes``/``msgpack_serialize`` cannot convert a typed key to bytes,
  so a state holding one (every member of the family's) would not save. This registers the
  key's array type with ``flax.serialization.register_serialization_state``: a key is saved
  as ``{"impl": name, "key_data": uint32 array}`` and restored bitwise with
  ``jax.random.wrap_key_data``. Nothing happens when flax is not installed; when it is but
  not imported yet, ``flax.serialization`` is imported here, once, when the first key of the
  process is built (about half a second). A handler flax itself provides is kept.
  """
  key_type = type(key)
  if key_type in _SERIALIZABLE_KEY_TYPES or isinstance(key, jax_core.Tracer):
    return
  serialization = sys.modules.get("flax.serialization")
  if serialization is None:
    if importlib.util.find_spec("flax") is None:
      _SERIALIZABLE_KEY_TYPES.add(key_type)
      return
    try:
      serialization = importlib.import_module("flax.serialization")
    except Exception:  # A broken flax install must not break the optimizers.
      _SERIALIZABLE_KEY_TYPES.add(key_type)
      return
  if not serialization.is_serializable(key_type):
    serialization.register_serialization_state(key_type, _key_to_state_dict, _key_from_state_dict)
  _SERIALIZABLE_KEY_TYPES.add(key_type)


def fresh_key(key: jax.Array) -> jax.Array:
  """A copy of a typed key in a buffer of its own (``init`` returns one per call)."""
  impl = jax.random.key_impl(key)
  return jax.random.wrap_key_data(jnp.array(jax.random.key_data(key), copy=True), impl=impl)


_COUNT_MAX = np.iinfo(np.int32).max


def next_step(count: jax.Array, rng_key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The ``(count, rng_key)`` of the next step.

  ``count`` saturates at 2³¹ − 1 (``optax.safe_increment``, so schedules stay at their last
  value). While it does, the key ratchets to the saturated step's key,
  ``rng_key ← fold_in(rng_key, count)``, so step keys ``fold_in(rng_key, count)`` never
  repeat however long the chain runs. Below saturation the key never changes, so a state and
  its checkpoints are those of a plain counter.
  """
  saturated = count == _COUNT_MAX
  ratcheted = jax.random.fold_in(rng_key, count)
  data = jnp.where(saturated, jax.random.key_data(ratcheted), jax.random.key_data(rng_key))
  new_key = jax.random.wrap_key_data(data, impl=jax.random.key_impl(rng_key))
  return jnp.asarray(optax.safe_increment(count)), new_key


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


_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry2x32(
  k1: jax.Array, k2: jax.Array, x1: jax.Array, x2: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """The Threefry-2x32 hash (20 rounds) of the counter pair ``(x1, x2)`` under key ``(k1, k2)``.

  Written out round by round in elementwise ``uint32`` operations, so XLA fuses it, the
  counters (an iota) and whatever consumes the bits into one loop, with no intermediate array.
  """
  ks = (k1, k2, k1 ^ k2 ^ np.uint32(0x1BD11BDA))
  x1 = x1 + ks[0]
  x2 = x2 + ks[1]
  for i in range(5):
    for r in _THREEFRY_ROTATIONS[i % 2]:
      x1 = x1 + x2
      x2 = ((x2 << np.uint32(r)) | (x2 >> np.uint32(32 - r))) ^ x1
    x1 = x1 + ks[(i + 1) % 3]
    x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x1, x2


def _fusable_bits(key: jax.Array, shape: tuple[int, ...]) -> bool:
  """Whether :func:`random_bits` can compute ``jax.random.bits`` inline for this key and shape."""
  return (
    jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    and str(jax.random.key_impl(key)) == "threefry2x32"
    and bool(getattr(jax.config, "jax_threefry_partitionable", False))
    and math.prod(shape) < 2**32
  )


def random_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """``jax.random.bits(key, shape, jnp.uint32)``, bit for bit, in a form XLA fuses.

  With the default ``threefry2x32`` keys and ``jax_threefry_partitionable``, element ``i`` (in
  row-major order) is the XOR of the two output words of Threefry-2x32 at the counter pair
  ``(0, i)``. ``jax.random.bits`` lowers the hash on CPU as a loop that writes its two
  full-size state arrays on every pass (four buffers of the draw's size, about 10 ns per
  element); written inline, the hash fuses with its consumer (the perturbed weights, the
  update), so a draw costs a few nanoseconds per element and no memory. Other key
  implementations and non-partitionable threefry fall back to ``jax.random.bits``.
  """
  if not _fusable_bits(key, shape):
    return jax.random.bits(key, shape, jnp.uint32)
  data = jax.random.key_data(key)
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * np.uint32(stride)
    stride *= shape[axis]
  hi, lo = _threefry2x32(data[..., 0], data[..., 1], jnp.zeros(shape, jnp.uint32), index)
  return hi ^ lo


@jax.custom_jvp
def materialize(x: jax.Array) -> jax.Array:
  """``x``, bit for bit, computed into a buffer of its own rather than fused into consumers.

  XLA fuses an elementwise producer into each of its consumers. That is right for a draw read
  once at its own size, and wrong when the consumer reads it many times: a packed word read
  by 32 (or 4) elements would be hashed 32 (or 4) times, and a perturbed BatchNorm scale
  broadcast over a ``(batch, length, channels)`` activation would be drawn once per
  activation element (measured: fSGLD at 2.1× SGD's step time on a 1-D CNN, 1.1× once
  materialised). A reduction is never fused into its consumer, so ``x`` goes through one:
  a bitwise OR of ``x``'s bits with zero along a new axis of length 2, which returns ``x``
  exactly.

  It is the identity to differentiation too (a custom JVP passes tangents through, and its
  transpose cotangents), so derivatives of anything computed from the perturbed weights are
  those of ``x`` itself.
  """
  if jnp.issubdtype(x.dtype, jnp.floating):
    bits = jax.lax.bitcast_convert_type(x, _UNSIGNED[jnp.dtype(x.dtype).itemsize])
    return jax.lax.bitcast_convert_type(materialize(bits), x.dtype)
  if not jnp.issubdtype(x.dtype, jnp.unsignedinteger):
    return x
  stacked = jnp.stack([x, jnp.zeros_like(x)], axis=-1)
  return jax.lax.reduce(stacked, np.array(0, x.dtype), jax.lax.bitwise_or, (x.ndim,))


@materialize.defjvp
def _materialize_jvp(primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple[Any, Any]:
  (x,), (t,) = primals, tangents
  return materialize(x), t


_UNSIGNED = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}


def _packed_bits(key: jax.Array, shape: tuple[int, ...], width: int) -> jax.Array:
  """``uint32`` array of ``shape`` whose low ``width`` bits are uniform random bits.

  The words are ``random_bits(key, word_shape)``; along the last axis whose length is a
  multiple of ``per_word = 32 // width``, element ``j`` takes bits ``[w (j % per_word),
  w (j % per_word) + w)`` of word ``j // per_word``, all other indices unchanged. Without such
  an axis each element takes the low bits of its own word.
  """
  per_word = 32 // width
  mask = jnp.uint32((1 << width) - 1)
  axes = [a for a, d in enumerate(shape) if d > 0 and d % per_word == 0]
  if not axes:
    return random_bits(key, shape) & mask
  axis = axes[-1]
  word_shape = (*shape[:axis], shape[axis] // per_word, *shape[axis + 1 :])
  words = jnp.expand_dims(materialize(random_bits(key, word_shape)), axis + 1)
  shifts = jnp.arange(per_word, dtype=jnp.uint32) * jnp.uint32(width)
  shifts = shifts.reshape((1,) * (axis + 1) + (per_word,) + (1,) * (len(shape) - axis - 1))
  return ((words >> shifts) & mask).reshape(shape)


def _normal_from_bits(bits: jax.Array, dtype: Any) -> jax.Array:
  r"""``jax.random.normal``'s transform of 32-bit words into standard normals of ``dtype``.

  A uniform on ``(-1, 1)`` from the top mantissa bits (the low 8 or 16 bits of each word for
  16-bit floats), then :math:`\sqrt 2 \operatorname{erf}^{-1}(u)`.
  """
  finfo = jnp.finfo(dtype)
  nbits, nmant = finfo.bits, finfo.nmant
  uint = jnp.uint32 if nbits == 32 else jnp.uint16
  rng_bits = 8 if nmant < 8 else nbits
  if rng_bits != 32:
    bits = bits.astype(jnp.uint8 if rng_bits == 8 else jnp.uint16).astype(uint)
  one = jnp.asarray(np.array(1.0, dtype).view(uint), uint)
  float_bits = (bits >> jnp.asarray(rng_bits - nmant, uint)) | one
  floats = jax.lax.bitcast_convert_type(float_bits, dtype) - jnp.asarray(1.0, dtype)
  lo = jnp.asarray(np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype), dtype=dtype), dtype)
  hi = jnp.asarray(1.0, dtype)
  uniform = jnp.maximum(lo, floats * (hi - lo) + lo)
  return jnp.asarray(np.sqrt(2), dtype) * jax.lax.erf_inv(uniform)


def _gaussian(key: jax.Array, leaf: jax.Array) -> jax.Array:
  dtype = jnp.result_type(leaf)
  if dtype not in (jnp.float32, jnp.bfloat16, jnp.float16) or not _fusable_bits(key, leaf.shape):
    return jax.random.normal(key, leaf.shape, dtype)
  return _normal_from_bits(random_bits(key, leaf.shape), dtype)


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
