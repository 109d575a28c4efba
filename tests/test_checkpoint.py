"""Checkpoints: an orbax save and restore of the full optimizer state continues the same run.

Orbax saves typed PRNG keys (``key<fry>[]``) as they are, so no conversion is needed: the
restore target built with ``ocp.utils.to_shape_dtype_struct`` (or ``jax.ShapeDtypeStruct``
with a ``sharding``) carries the key dtype, and the restored ``FSGLDState.rng_key`` is a typed
key again. Step ``k`` draws from ``(rng_key, k)``, so the restored run draws exactly what the
uninterrupted run would have.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import fsgld_optax

source_of = fsgld_optax.find_fsgld_state

_STEPS = 6
_SAVE_AT = 3


def _loss(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
  hidden = jnp.tanh(x @ params["w1"] + params["b1"][None, :])
  return jnp.mean((hidden @ params["w2"] - y) ** 2)


def _params() -> dict[str, jax.Array]:
  k1, k2 = jax.random.split(jax.random.key(0))
  return {
    "w1": jax.random.normal(k1, (4, 16)) / 2.0,
    "b1": jnp.zeros(16),
    "w2": jax.random.normal(k2, (16, 8)) / 4.0,
  }


def _batches() -> list[tuple[jax.Array, jax.Array]]:
  keys = jax.random.split(jax.random.key(1), _STEPS)
  return [
    (jax.random.normal(k, (8, 4)), jnp.sin(jnp.arange(64.0).reshape(8, 8) / (i + 1)))
    for i, k in enumerate(keys)
  ]


@functools.cache
def _optimizer(impl: str = "threefry2x32") -> optax.GradientTransformationExtraArgs:
  """fSGLD with every kind of state orbax must handle: chain, a schedule, apply_if_finite."""
  fsgld = fsgld_optax.fsgld(
    optax.cosine_decay_schedule(0.1, _STEPS),
    1e5,
    weight_decay=5e-4,
    key=jax.random.key(42, impl=impl),
  )
  tx = optax.chain(optax.clip_by_global_norm(1.0), fsgld)
  return optax.apply_if_finite(tx, max_consecutive_errors=3)  # pyright: ignore[reportReturnType]


@functools.cache
def _step_fn(tx: optax.GradientTransformation) -> Any:
  """The jitted training step (cached, so the tests share one compilation)."""
  grad_fn = fsgld_optax.perturbed_value_and_grad(_loss, n_perturbations=2)

  @jax.jit
  def step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> Any:
    _, grads = grad_fn(params, opt_state, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return step


def _run(step: Any, params: Any, opt_state: Any, batches: Any) -> tuple[Any, Any]:
  for x, y in batches:
    params, opt_state = step(params, opt_state, x, y)
  return params, opt_state


def _leaves(tree: Any) -> list[np.ndarray]:
  """Leaves as NumPy arrays, typed keys as their raw key data."""
  unwrap = lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
  return [np.asarray(unwrap(x)) for x in jax.tree.leaves(tree)]


def test_save_restore_continue_is_bitwise_identical(tmp_path: pathlib.Path) -> None:
  tx = _optimizer()
  step = _step_fn(tx)
  batches = _batches()
  params = _params()
  ref_params, ref_state = _run(step, params, tx.init(params), batches)

  params, opt_state = _run(step, params, tx.init(params), batches[:_SAVE_AT])
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.save(_SAVE_AT, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state}))
    manager.wait_until_finished()
  abstract = jax.tree.map(
    ocp.utils.to_shape_dtype_struct, {"params": _params(), "opt_state": tx.init(_params())}
  )
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    assert manager.latest_step() == _SAVE_AT
    restored = manager.restore(_SAVE_AT, args=ocp.args.StandardRestore(abstract))

  state = fsgld_optax.find_fsgld_state(restored["opt_state"])
  assert jnp.issubdtype(fsgld_optax.find_fsgld_state(state).rng_key.dtype, jax.dtypes.prng_key)
  assert int(fsgld_optax.find_fsgld_state(state).count) == _SAVE_AT
  assert jax.tree.structure(restored["opt_state"]) == jax.tree.structure(opt_state)
  for a, b in zip(
    _leaves(restored), _leaves({"params": params, "opt_state": opt_state}), strict=True
  ):
    np.testing.assert_array_equal(a, b)

  new_params, new_state = _run(step, restored["params"], restored["opt_state"], batches[_SAVE_AT:])
  for a, b in zip(_leaves((new_params, new_state)), _leaves((ref_params, ref_state)), strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg", "unsafe_rbg"])
def test_typed_keys_of_every_impl_round_trip(tmp_path: pathlib.Path, impl: str) -> None:
  state = fsgld_optax.fsgld(0.1, 1e4, key=jax.random.key(7, impl=impl)).init(_params())
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(tmp_path / "state", state)
    checkpointer.wait_until_finished()
    restored = checkpointer.restore(
      tmp_path / "state", jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    )
  assert isinstance(source_of(restored), fsgld_optax.FSGLDState)
  assert source_of(restored).rng_key.dtype == source_of(state).rng_key.dtype
  assert jax.random.key_impl(source_of(restored).rng_key) == jax.random.key_impl(
    source_of(state).rng_key
  )
  for a, b in zip(_leaves(restored), _leaves(state), strict=True):
    np.testing.assert_array_equal(a, b)


def test_restore_onto_an_eight_device_mesh_continues_identically(tmp_path: pathlib.Path) -> None:
  """Saved from one device, restored with NamedShardings on 8 devices, continued under jit.

  The draws are global arrays computed shard by shard, so the sharded continuation equals
  the one-device run up to the reduction order of the sharded matmuls (rtol 1e-6).
  """
  devices = jax.devices()[:8]
  assert len(devices) == 8
  tx = _optimizer()
  step = _step_fn(tx)
  batches = _batches()
  params = _params()
  ref_params, ref_state = _run(step, params, tx.init(params), batches)
  params, opt_state = _run(step, params, tx.init(params), batches[:_SAVE_AT])
  assert {d for x in jax.tree.leaves(params) for d in x.devices()} == {jax.devices()[0]}

  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / "state", {"params": params, "opt_state": opt_state})
  checkpointer.wait_until_finished()

  mesh = jax.make_mesh((8,), ("data",), (jax.sharding.AxisType.Auto,), devices=devices)
  # Shard the 16-wide hidden dimension; everything else (state scalars, keys) is replicated.
  specs = {"w1": P(None, "data"), "b1": P("data"), "w2": P("data", None)}

  def target(path: Any, x: Any) -> jax.ShapeDtypeStruct:
    name = getattr(path[-1], "key", None)
    spec = specs.get(name, P()) if path[0].key == "params" else P()
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, spec))

  abstract = jax.tree_util.tree_map_with_path(
    target, {"params": _params(), "opt_state": tx.init(_params())}
  )
  restored = checkpointer.restore(tmp_path / "state", abstract)
  checkpointer.close()
  assert restored["params"]["w1"].sharding.spec == P(None, "data")
  assert len(restored["params"]["w1"].sharding.device_set) == 8
  state = fsgld_optax.find_fsgld_state(restored["opt_state"])
  assert len(fsgld_optax.find_fsgld_state(state).rng_key.sharding.device_set) == 8

  replicated = NamedSharding(mesh, P())
  data = [jax.device_put(batch, replicated) for batch in batches[_SAVE_AT:]]
  new_params, new_state = _run(step, restored["params"], restored["opt_state"], data)
  assert new_params["w1"].sharding.spec == P(None, "data")
  assert int(fsgld_optax.find_fsgld_state(new_state).count) == _STEPS
  for a, b in zip(_leaves(new_params), _leaves(ref_params), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  for a, b in zip(_leaves(new_state), _leaves(ref_state), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
