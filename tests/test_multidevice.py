"""fSGLD on several devices: ``jit`` with ``NamedSharding``, ``shard_map`` and ``pmap``.

Checks lines 3 and 4 of the randomness contract (``fsgld_optax._fsgld``) on the eight CPU
devices that the root ``conftest.py`` forces, that the fSGLD train step compiles to no more
collectives than the SGD step under the same sharding, and that ``examples/data_parallel.py``
runs.
"""

import functools
import itertools
import os
import pathlib
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import fsgld_optax
from fsgld_optax import _randomness

source_of = fsgld_optax.find_fsgld_state

NUM_DEVICES = 8
AXIS = "data"
LR, BETA = 0.05, 1e4  # σ = β^{-1.1/4} ≈ 0.08 and a Langevin step of sqrt(2λ/β) = 3e-3.

pytestmark = pytest.mark.skipif(
  jax.device_count() < NUM_DEVICES, reason=f"needs {NUM_DEVICES} devices (see conftest.py)"
)


def make_mesh() -> Mesh:
  return Mesh(np.array(jax.devices()[:NUM_DEVICES]), (AXIS,))


# ---------------------------------------------------------------------------------------------
# A small MLP whose leaves exercise every sharding and bit-packing case.
# ---------------------------------------------------------------------------------------------


def mlp_params() -> dict:
  """An 8 → 64 → 32 → 4 MLP.

  Under FSDP, w1 and b1 shard along their 64 axis, w2 along axis 0 (64), b2 along its 32
  axis, w3 along axis 0, and b3 (length 4) stays replicated. The packed draws unpack along the
  last axis divisible by the elements per word: Rademacher bits of w1 along its sharded axis
  (2 words per row for 8 shards), of w2 along axis 1 (sharded along 0); Binomial bytes of w3
  along axis 1 (sharded along 0).
  """
  k1, k2, k3 = jax.random.split(jax.random.key(7), 3)
  return {
    "w1": jax.random.normal(k1, (8, 64)) / np.sqrt(8),
    "b1": jnp.zeros(64),
    "w2": jax.random.normal(k2, (64, 32)) / 8,
    "b2": jnp.zeros(32),
    "w3": jax.random.normal(k3, (32, 4)) / np.sqrt(32),
    "b3": jnp.zeros(4),
  }


def mlp_loss(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
  h = jnp.tanh(x @ params["w1"] + params["b1"][None])
  h = jnp.tanh(h @ params["w2"] + params["b2"][None])
  logits = h @ params["w3"] + params["b3"][None]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def mlp_batch(batch_size: int = 64, steps: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Gaussian inputs and labels from a fixed random linear teacher."""
  lead = (batch_size,) if steps is None else (steps, batch_size)
  kx, kw = jax.random.split(jax.random.key(11))
  x = jax.random.normal(kx, (*lead, 8))
  y = jnp.argmax(x @ jax.random.normal(kw, (8, 4)), axis=-1)
  return x, y


def fsdp_spec(leaf: jax.Array) -> P:
  """Shards the largest axis that the mesh divides; replicates leaves with no such axis."""
  axes = [a for a, d in enumerate(leaf.shape) if d % NUM_DEVICES == 0]
  if not axes:
    return P()
  axis = max(axes, key=lambda a: (leaf.shape[a], -a))
  return P(*[AXIS if a == axis else None for a in range(leaf.ndim)])


def param_shardings(mesh: Mesh, params: Any, layout: str) -> Any:
  if layout == "data_parallel":
    return jax.tree.map(lambda _: NamedSharding(mesh, P()), params)
  return jax.tree.map(lambda p: NamedSharding(mesh, fsdp_spec(p)), params)


def fsgld_step(
  tx: optax.GradientTransformationExtraArgs, grad_fn: Callable[..., Any]
) -> Callable[..., Any]:
  def step(params, opt_state, x, y):
    loss, grads = grad_fn(params, opt_state, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


# ---------------------------------------------------------------------------------------------
# 1. jit + NamedSharding: the 8-device run equals the 1-device run.
# ---------------------------------------------------------------------------------------------

CONFIGS = {
  "n1": dict(n_perturbations=1),
  "n4_split": dict(n_perturbations=4, split_batch=True),
  "n4_split_cheap": dict(
    n_perturbations=4, split_batch=True, perturbation="rademacher", langevin_noise="binomial"
  ),
  # The rest of the family, each with a state of its own (momentum, RMS statistics, Adam's
  # moments) that must stay sharded like the parameters.
  "fsghmc": dict(n_perturbations=4, split_batch=True, optimizer="fsghmc"),
  "psgld": dict(n_perturbations=2, split_batch=True, optimizer="psgld"),
  "rwp_adamw": dict(
    n_perturbations=4,
    split_batch=True,
    perturbation_batch_size=2,
    perturbation_scale="filter",
    optimizer="rwp_adamw",
  ),
}

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformationExtraArgs]] = {
  "fsgld": lambda noise: fsgld_optax.fsgld(LR, BETA, key=3, langevin_noise=noise),
  "fsghmc": lambda noise: fsgld_optax.fsghmc(LR, BETA, momentum=0.5, key=3, langevin_noise=noise),
  "psgld": lambda noise: fsgld_optax.psgld(1e-3, BETA, key=3),
  "rwp_adamw": lambda noise: optax.chain(
    fsgld_optax.rwp(0.05, key=3), optax.adamw(1e-3, weight_decay=1e-2)
  ),
}


def make_fsgld(config: dict) -> tuple[optax.GradientTransformationExtraArgs, Callable[..., Any]]:
  config = dict(config)
  noise = config.pop("langevin_noise", "gaussian")
  tx = OPTIMIZERS[config.pop("optimizer", "fsgld")](noise)
  return tx, fsgld_optax.perturbed_value_and_grad(mlp_loss, **config)


def state_shardings(tx: optax.GradientTransformation, params: Any, replicated: Any) -> Any:
  """Shardings of ``tx.init(params)``: a leaf shaped like a parameter is sharded like it."""
  by_shape = {p.shape: p.sharding for p in jax.tree.leaves(params)}
  # Every parameter shape is unique in the MLP, so shape identifies the parameter.
  assert len(by_shape) == len(jax.tree.leaves(params))
  return jax.tree.map(
    lambda s: by_shape.get(s.shape, replicated) if s.ndim else replicated,
    jax.eval_shape(tx.init, params),
  )


def same_shardings(tree: Any, expected: Any) -> bool:
  return all(
    a.sharding.is_equivalent_to(s, a.ndim)
    for a, s in zip(jax.tree.leaves(tree), jax.tree.leaves(expected), strict=True)
  )


@functools.cache
def jitted_step(config: str) -> tuple[optax.GradientTransformationExtraArgs, Callable[..., Any]]:
  """One jitted step per configuration, shared by both layouts and the 1-device run."""
  tx, grad_fn = make_fsgld(CONFIGS[config])
  return tx, jax.jit(fsgld_step(tx, grad_fn))


@functools.cache
def single_device_run(config: str) -> dict:
  """20 steps with everything committed to device 0."""
  tx, step = jitted_step(config)
  device = jax.devices()[0]
  xs, ys = jax.device_put(mlp_batch(steps=20), device)
  params = jax.device_put(mlp_params(), device)
  opt_state = jax.device_put(tx.init(params), device)
  for k in range(20):
    params, opt_state, _ = step(params, opt_state, xs[k], ys[k])
  return params


# The cheap distributions run under FSDP, where the packed bits meet sharded leaves.
SHARDED_CASES = [
  ("data_parallel", "n1"),
  ("data_parallel", "n4_split"),
  ("fsdp", "n1"),
  ("fsdp", "n4_split"),
  ("fsdp", "n4_split_cheap"),
]


FAMILY_CASES = [("fsdp", "fsghmc"), ("fsdp", "psgld"), ("fsdp", "rwp_adamw")]


@pytest.mark.parametrize(("layout", "config"), SHARDED_CASES + FAMILY_CASES)
def test_sharded_jit_equals_single_device(layout: str, config: str):
  mesh = make_mesh()
  tx, step = jitted_step(config)
  xs, ys = mlp_batch(steps=20)
  params = mlp_params()
  p1 = single_device_run(config)

  # Eight devices: parameters laid out by `layout`, batch sharded, state replicated.
  shardings = param_shardings(mesh, params, layout)
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P(AXIS))
  p8 = jax.device_put(params, shardings)
  # The state starts on the mesh, as the step returns it: scalars replicated, leaves that
  # mirror the parameters (momentum, moments) sharded like them (a plain tx.init leaves its
  # scalars on one device, and the second step would recompile).
  s8 = jax.jit(tx.init, out_shardings=state_shardings(tx, p8, replicated))(p8)
  init_shardings = jax.tree.map(lambda a: a.sharding, s8)
  for k in range(20):
    x, y = jax.device_put((xs[k], ys[k]), batch_sharding)
    p8, s8, _ = step(p8, s8, x, y)
    # One step at a time: XLA:CPU's in-process all-reduce can deadlock when several
    # executions with collectives are in flight on a machine with few cores.
    jax.block_until_ready(p8)
    # The layout survives every update: no resharding and no recompilation between steps.
    assert same_shardings(p8, shardings)
    assert same_shardings(s8, init_shardings)
  assert int(fsgld_optax.find_fsgld_state(s8).count) == 20

  # The batch reductions are split across devices, so the runs may differ by float32 rounding
  # (measured: at most 6e-8 absolute, a few ulp of the largest weights); the draws are
  # bitwise equal. atol covers entries near 0, where a relative tolerance means nothing.
  for name in params:
    np.testing.assert_allclose(p8[name], p1[name], rtol=1e-6, atol=1e-7, err_msg=name)
  # The parameters moved far more than the tolerance, so the comparison above can fail.
  assert not np.allclose(p8["w2"], params["w2"], rtol=1e-3)


def test_sharded_draws_are_bitwise_the_single_device_draws():
  """Each device computes its own shard of a draw: bitwise the unsharded draw, no collectives."""
  mesh = make_mesh()
  params = mlp_params()
  shardings = param_shardings(mesh, params, "fsdp")
  distributions = ("gaussian", "rademacher", "binomial")
  draw = lambda k, p: [_randomness.standard_noise_like(k, p, d) for d in distributions]
  key = jax.random.key(5)
  sharded_draw = jax.jit(draw, out_shardings=[shardings] * len(distributions))
  sharded_params = jax.device_put(params, shardings)
  hlo = sharded_draw.lower(key, sharded_params).compile().as_text()
  assert not any(count_collectives(hlo).values())
  sharded = sharded_draw(key, sharded_params)
  single = jax.jit(draw)(key, jax.device_put(params, jax.devices()[0]))
  for d, name in itertools.product(range(len(distributions)), params):
    np.testing.assert_array_equal(sharded[d][name], single[d][name], err_msg=name)
  # The draws are not all equal (the comparison above can fail).
  assert not np.array_equal(sharded[1]["w1"], sharded[2]["w1"])


# ---------------------------------------------------------------------------------------------
# 1b. Meshes with explicit and auto axes (jax.make_mesh(..., axis_types=...), jax.set_mesh).
# ---------------------------------------------------------------------------------------------

# (n_perturbations, perturbation_batch_size, antithetic, perturbation_scale)
MESH_CASES = [
  (1, None, False, "isotropic"),
  (2, 1, True, "isotropic"),
  (4, None, False, "filter"),
  (8, 4, True, "filter"),
]
# Auto axes with vectorised perturbations are the cases of section 1; here, the groups.
MESH_KINDS = [("Explicit", case) for case in MESH_CASES] + [("Auto", MESH_CASES[-1])]
MESH_BATCH = 64  # 8 examples per slice at n = 8: every slice still spreads over 8 devices


def gathered_loss(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
  """``mlp_loss`` with FSDP's all-gather of the weights written out, as explicit axes need.

  (With explicit axes a product of two operands sharded along the same mesh axis is a type
  error, so a model under FSDP gathers its weights itself; on one device this is a no-op.)
  """
  sharded = lambda w: any(s is not None for s in jax.typeof(w).sharding.spec)
  params = jax.tree.map(lambda w: jax.sharding.reshard(w, P()) if sharded(w) else w, params)
  return mlp_loss(params, x, y)


def mesh_case_fn(case: tuple) -> Callable[..., Any]:
  n, group, antithetic, scale = case
  # aux: the perturbed weights θ + σε that each perturbation saw, stacked.
  return jax.jit(
    fsgld_optax.perturbed_value_and_grad(
      lambda p, x, y: (gathered_loss(p, x, y), p),
      n_perturbations=n,
      has_aux=True,
      split_batch=n > 1,
      antithetic=antithetic,
      perturbation_batch_size=group,
      perturbation_scale=scale,
      aux_reduction="stack",
    )
  )


@functools.cache
def mesh_case_reference(case: tuple) -> Any:
  device = jax.devices()[0]
  params = jax.device_put(mlp_params(), device)
  state = fsgld_optax.rwp(0.05, key=3).init(params)
  return mesh_case_fn(case)(params, state, *jax.device_put(mlp_batch(MESH_BATCH), device))


@pytest.mark.parametrize(
  ("axis_type", "case"), MESH_KINDS, ids=[f"{k}-{'-'.join(map(str, c))}" for k, c in MESH_KINDS]
)
def test_explicit_and_auto_meshes_equal_single_device(axis_type: str, case: tuple):
  """``split_batch``, groups, antithetic pairs and weight-dependent scales on both mesh kinds.

  Parameters under FSDP: w1's kernel is sharded along its last (filter) axis, w2's and w3's
  along their input axis, so each of their filters is split across devices and
  ``perturbation_scale="filter"`` must take the norm over all of them.
  """
  axis_types = (getattr(jax.sharding.AxisType, axis_type),)
  mesh = jax.make_mesh((NUM_DEVICES,), (AXIS,), axis_types=axis_types)
  with jax.set_mesh(mesh):
    params = mlp_params()
    params = jax.device_put(params, param_shardings(mesh, params, "fsdp"))
    state = jax.jit(fsgld_optax.rwp(0.05, key=3).init)(params)
    batch = jax.device_put(mlp_batch(MESH_BATCH), NamedSharding(mesh, P(AXIS)))
    (value, perturbed), grads = mesh_case_fn(case)(params, state, *batch)
  (value_1, perturbed_1), grads_1 = mesh_case_reference(case)
  if case[3] == "isotropic":
    # The draws are computed shard by shard: θ + σε is bitwise the 1-device one.
    for name in perturbed:
      np.testing.assert_array_equal(perturbed[name], perturbed_1[name], err_msg=name)
  else:
    # The scale's norm over a filter split across devices is summed in another order.
    for name in perturbed:
      np.testing.assert_allclose(
        perturbed[name], perturbed_1[name], rtol=1e-6, atol=1e-7, err_msg=name
      )
  # Batch means are split across devices: float32 rounding of the reductions only.
  np.testing.assert_allclose(value, value_1, rtol=1e-6)
  for name in grads:
    np.testing.assert_allclose(grads[name], grads_1[name], rtol=1e-5, atol=1e-7, err_msg=name)
  assert perturbed["w2"].shape == (case[0], *params["w2"].shape)
  # The n perturbations differ from each other and from θ (the comparisons above can fail).
  assert not np.allclose(perturbed["w2"][0], params["w2"], atol=1e-3)
  if case[0] > 1:
    assert not np.allclose(perturbed["w2"][0], perturbed["w2"][-1], atol=1e-3)


# ---------------------------------------------------------------------------------------------
# 2. shard_map and pmap with axis_name.
# ---------------------------------------------------------------------------------------------

TINY_STEPS = 1000
TINY_BATCH = 16  # two examples per device


def tiny_params() -> dict:
  return {"w": jnp.array([0.5, -0.3, 0.2]), "b": jnp.zeros(())}


def tiny_loss(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
  """Least squares: strongly convex, so rounding differences between runs stay bounded."""
  return 0.5 * jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def tiny_data() -> tuple[jax.Array, jax.Array]:
  kx, ke = jax.random.split(jax.random.key(13))
  x = jax.random.normal(kx, (TINY_STEPS, TINY_BATCH, 3))
  y = x @ jnp.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * jax.random.normal(ke, x.shape[:2])
  return x, y


def tiny_optimizer(axis_name: str | None, per_device: bool = False):
  tx = fsgld_optax.fsgld(0.05, 1e4, sigma=0.05, key=17)
  grad_fn = fsgld_optax.perturbed_value_and_grad(
    tiny_loss, axis_name=axis_name, per_device_perturbations=per_device
  )
  return tx, grad_fn


def tiny_train(tx, grad_fn) -> Callable[..., Any]:
  """All TINY_STEPS steps in one ``lax.scan``; batches are the leading axis of x, y."""
  step = fsgld_step(tx, grad_fn)

  def train(params, opt_state, xs, ys):
    def body(carry, batch):
      params, opt_state, _ = step(*carry, *batch)
      return (params, opt_state), None

    (params, opt_state), _ = jax.lax.scan(body, (params, opt_state), (xs, ys))
    return params, opt_state

  return train


@pytest.fixture(scope="module")
def tiny_jit_result() -> dict:
  """The single-device reference on the global batch."""
  tx, grad_fn = tiny_optimizer(None)
  params = tiny_params()
  out, _ = jax.jit(tiny_train(tx, grad_fn))(params, tx.init(params), *tiny_data())
  return out


def run_shard_map(per_device: bool) -> dict:
  """The 1000 steps inside one shard_map; returns each device's copy stacked on axis 0."""
  mesh = make_mesh()
  tx, grad_fn = tiny_optimizer(AXIS, per_device)
  train = tiny_train(tx, grad_fn)

  def per_shard(params, opt_state, xs, ys):
    params, _ = train(params, opt_state, xs, ys)
    return jax.tree.map(lambda a: a[None], params)

  mapped = jax.shard_map(
    per_shard, mesh=mesh, in_specs=(P(), P(), P(None, AXIS), P(None, AXIS)), out_specs=P(AXIS)
  )
  params = tiny_params()
  return jax.jit(mapped)(params, tx.init(params), *tiny_data())


def run_pmap(per_device: bool) -> dict:
  """The 1000 steps inside one pmap; returns each device's copy stacked on axis 0."""
  tx, grad_fn = tiny_optimizer(AXIS, per_device)
  train = tiny_train(tx, grad_fn)
  params = tiny_params()
  replicate = lambda tree: jax.tree.map(
    lambda a: jnp.broadcast_to(a, (NUM_DEVICES, *a.shape)), tree
  )
  xs, ys = tiny_data()
  per_device_batch = lambda a: jnp.moveaxis(
    a.reshape(TINY_STEPS, NUM_DEVICES, -1, *a.shape[2:]), 1, 0
  )
  mapped = jax.pmap(
    lambda *args: train(*args)[0], axis_name=AXIS, devices=jax.devices()[:NUM_DEVICES]
  )
  return mapped(
    replicate(params), replicate(tx.init(params)), per_device_batch(xs), per_device_batch(ys)
  )


MAPPERS = {"shard_map": run_shard_map, "pmap": run_pmap}


@pytest.mark.parametrize("per_device", [False, True], ids=["shared_eps", "per_device_eps"])
@pytest.mark.parametrize("mapper", list(MAPPERS))
def test_replicas_stay_bitwise_identical(mapper: str, per_device: bool, tiny_jit_result: dict):
  stacked = MAPPERS[mapper](per_device)
  for name, leaf in stacked.items():
    leaf = np.asarray(leaf)
    assert leaf.shape[0] == NUM_DEVICES
    for d in range(1, NUM_DEVICES):
      np.testing.assert_array_equal(leaf[d], leaf[0], err_msg=f"{name} on device {d}")
  final = {name: np.asarray(leaf[0]) for name, leaf in stacked.items()}
  start = tiny_params()
  if per_device:
    # 8 perturbations a step instead of 1: a different chain, near the same minimum.
    assert not np.allclose(final["w"], tiny_jit_result["w"], rtol=1e-4, atol=0)
    np.testing.assert_allclose(final["w"], tiny_jit_result["w"], atol=0.2)
  else:
    # Same ε, ξ and global batch as the single-device jit run. The batch mean is computed as a
    # pmean of per-device means, which may round differently from one mean over 16 examples
    # (~1e-7 relative per gradient); gradient descent on this strongly convex loss contracts
    # such differences instead of accumulating them. Measured on CPU: bitwise equal.
    for name in final:
      np.testing.assert_allclose(final[name], tiny_jit_result[name], rtol=1e-6, atol=1e-7)
  # The chain moved from its start by far more than any tolerance above.
  assert np.abs(final["w"] - start["w"]).min() > 0.1


@functools.partial(jax.jit, static_argnames="per_device")
def contract_reference(params, opt_state, x, y, per_device: bool):
  """Per device d: θ + ε_d with the ε the contract names, and the loss and gradient there on
  the device's batch shard. The device index is folded into the key only with the option."""
  base = _randomness.perturbation_key(source_of(opt_state).rng_key, source_of(opt_state).count)

  def on_device(d, xd, yd):
    key = jax.random.fold_in(base, d) if per_device else base
    eps = _randomness.standard_noise_like(jax.random.split(key, 1)[0], params, "gaussian")
    theta = jax.tree.map(lambda p, e: p + source_of(opt_state).sigma * e, params, eps)
    loss, grads = jax.value_and_grad(tiny_loss)(theta, xd, yd)
    return theta, loss, grads

  shards = lambda a: a.reshape(NUM_DEVICES, -1, *a.shape[1:])
  return jax.vmap(on_device)(jnp.arange(NUM_DEVICES), shards(x), shards(y))


@pytest.mark.parametrize("per_device", [False, True], ids=["shared_eps", "per_device_eps"])
@pytest.mark.parametrize("mapper", list(MAPPERS))
def test_mapped_perturbations_follow_the_contract(mapper: str, per_device: bool):
  """ε per device is the draw the contract names; the returned gradient is the device mean."""
  tx = fsgld_optax.fsgld(0.05, 1e4, sigma=0.1, key=23)
  params = tiny_params()
  opt_state = tx.init(params)
  # aux is the perturbed parameters θ + ε that each device saw (returned per device).
  loss_with_aux = lambda p, x, y: (tiny_loss(p, x, y), p)
  grad_fn = fsgld_optax.perturbed_value_and_grad(
    loss_with_aux, has_aux=True, axis_name=AXIS, per_device_perturbations=per_device
  )
  xs, ys = tiny_data()
  x, y = xs[0], ys[0]

  def body(params, opt_state, x, y):
    (loss, perturbed), grads = grad_fn(params, opt_state, x, y)
    return loss, perturbed, grads

  if mapper == "shard_map":
    mapped = jax.shard_map(
      lambda *a: jax.tree.map(lambda t: t[None], body(*a)),
      mesh=make_mesh(),
      in_specs=(P(), P(), P(AXIS), P(AXIS)),
      out_specs=P(AXIS),
    )
    loss, perturbed, grads = jax.jit(mapped)(params, opt_state, x, y)
  else:
    rep = lambda tree: jax.tree.map(lambda a: jnp.broadcast_to(a, (NUM_DEVICES, *a.shape)), tree)
    split = lambda a: a.reshape(NUM_DEVICES, -1, *a.shape[1:])
    mapped = jax.pmap(body, axis_name=AXIS, devices=jax.devices()[:NUM_DEVICES])
    loss, perturbed, grads = mapped(rep(params), rep(opt_state), split(x), split(y))

  expected_perturbed, expected_loss, expected_grads = contract_reference(
    params, opt_state, x, y, per_device
  )
  for name in params:
    np.testing.assert_allclose(perturbed[name], expected_perturbed[name], rtol=1e-6, err_msg=name)
  # The pmean'd loss and gradient are the same on every device and equal the mean over
  # devices of the loss and gradient at each device's ε on its batch shard (an 8-term float32
  # mean, so rtol 1e-6).
  np.testing.assert_allclose(loss, np.full(NUM_DEVICES, expected_loss.mean()), rtol=1e-6)
  for name in params:
    mean_grad = np.broadcast_to(expected_grads[name].mean(0), grads[name].shape)
    np.testing.assert_allclose(grads[name], mean_grad, rtol=1e-6, atol=1e-7, err_msg=name)

  distinct = {np.asarray(perturbed["w"][d]).tobytes() for d in range(NUM_DEVICES)}
  assert len(distinct) == (NUM_DEVICES if per_device else 1)
  if per_device:
    # The per-device gradients before the pmean differ (different ε on each device).
    assert not np.allclose(expected_grads["w"][0], expected_grads["w"][1], rtol=1e-3)


@pytest.mark.parametrize("scale", ["filter", "element"])
def test_shard_map_weight_dependent_scales_equal_single_device(scale: str):
  """Data parallel (replicated parameters) under shard_map: every device computes the same
  filter-wise or element-wise scale from its copy of θ, so the pmean'd loss and gradient
  equal the single-device ones on the global batch."""
  params = mlp_params()
  state = fsgld_optax.rwp(0.05, key=5).init(params)
  x, y = mlp_batch()
  options: dict[str, Any] = dict(n_perturbations=2, antithetic=True, perturbation_scale=scale)
  grad_fn = fsgld_optax.perturbed_value_and_grad(mlp_loss, axis_name=AXIS, **options)
  mapped = jax.shard_map(
    grad_fn, mesh=make_mesh(), in_specs=(P(), P(), P(AXIS), P(AXIS)), out_specs=(P(), P())
  )
  value, grads = jax.jit(mapped)(params, state, x, y)
  value_1, grads_1 = jax.jit(fsgld_optax.perturbed_value_and_grad(mlp_loss, **options))(
    params, state, x, y
  )
  # A mean of 8 device means against one mean over the batch: float32 rounding.
  np.testing.assert_allclose(value, value_1, rtol=1e-6)
  for name in params:
    np.testing.assert_allclose(grads[name], grads_1[name], rtol=1e-5, atol=1e-7, err_msg=name)
  # The scale matters: the isotropic gradient at the same σ differs.
  isotropic: dict[str, Any] = dict(options, perturbation_scale="isotropic")
  _, grads_iso = jax.jit(fsgld_optax.perturbed_value_and_grad(mlp_loss, **isotropic))(
    params, state, x, y
  )
  assert not np.allclose(grads_1["w1"], grads_iso["w1"], rtol=1e-3)


# ---------------------------------------------------------------------------------------------
# 3. No collectives beyond SGD's.
# ---------------------------------------------------------------------------------------------

COLLECTIVES = ("all-reduce", "all-gather", "collective-permute", "all-to-all", "reduce-scatter")


def count_collectives(hlo: str | None) -> dict[str, int]:
  """Counts collective instructions (sync, or the ``-start`` of async ones) in HLO text."""
  assert hlo is not None
  return {op: len(re.findall(rf"\b{op}(?:-start)?\(", hlo)) for op in COLLECTIVES}


def compiled_collectives(step: Callable[..., Any], opt_state: Any, layout: str) -> dict[str, int]:
  """Collectives of ``step`` compiled for the shardings of the equality test above."""
  mesh = make_mesh()
  params = mlp_params()
  params = jax.device_put(params, param_shardings(mesh, params, layout))
  opt_state = jax.device_put(opt_state, NamedSharding(mesh, P()))
  x, y = jax.device_put(mlp_batch(), NamedSharding(mesh, P(AXIS)))
  return count_collectives(step.lower(params, opt_state, x, y).compile().as_text())


@functools.cache
def sgd_collectives(layout: str) -> dict[str, int]:
  sgd = optax.sgd(LR)

  def sgd_step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(mlp_loss)(params, x, y)
    updates, opt_state = sgd.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return compiled_collectives(jax.jit(sgd_step), sgd.init(mlp_params()), layout)


@pytest.mark.parametrize(("layout", "config"), SHARDED_CASES)
def test_no_collectives_beyond_sgd(layout: str, config: str):
  baseline = sgd_collectives(layout)
  tx, step = jitted_step(config)
  counts = compiled_collectives(step, tx.init(mlp_params()), layout)
  assert baseline["all-reduce"] >= 1  # the gradient reduction is found, so counting works
  if layout == "fsdp":
    assert baseline["all-gather"] >= 1  # FSDP gathers the weights for the forward pass
  allowed = dict(baseline)
  if CONFIGS[config]["n_perturbations"] > 1:
    # With 1 < n < devices and split_batch, each perturbation's 1/n slice of the batch spans
    # NUM_DEVICES / n devices. XLA reduces each perturbation's gradient over its device group
    # (2 devices here), then averages the n results across groups (4 devices): two
    # all-reduces of the gradient's size where SGD has one over all 8. No other collective is
    # added. With n = 1, and with n = NUM_DEVICES (one perturbation per device), the counts
    # equal SGD's.
    allowed["all-reduce"] += 1
  for op in COLLECTIVES:
    assert counts[op] <= allowed[op], (op, counts, baseline)


def test_shard_map_step_has_sgds_collectives_for_any_n():
  """Under shard_map each device averages its n perturbations locally: one pmean, as SGD."""
  mesh = make_mesh()
  sgd = optax.sgd(LR)

  def sgd_step(params, opt_state, x, y):
    # Under shard_map, the gradient of the pmean'd loss is the all-reduced mean gradient.
    loss, grads = jax.value_and_grad(lambda p: jax.lax.pmean(mlp_loss(p, x, y), AXIS))(params)
    updates, opt_state = sgd.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  tx, grad_fn = make_fsgld(dict(n_perturbations=4, split_batch=True, axis_name=AXIS))

  def mapped(step: Callable[..., Any]) -> Callable[..., Any]:
    in_specs = (P(), P(), P(AXIS), P(AXIS))
    return jax.jit(jax.shard_map(step, mesh=mesh, in_specs=in_specs, out_specs=(P(), P(), P())))

  sgd_counts = compiled_collectives(mapped(sgd_step), sgd.init(mlp_params()), "data_parallel")
  counts = compiled_collectives(
    mapped(fsgld_step(tx, grad_fn)), tx.init(mlp_params()), "data_parallel"
  )
  assert sgd_counts["all-reduce"] >= 1
  assert counts == sgd_counts


# ---------------------------------------------------------------------------------------------
# 5. The example script runs.
# ---------------------------------------------------------------------------------------------


def test_data_parallel_example_runs(tmp_path: pathlib.Path):
  root = pathlib.Path(__file__).resolve().parents[1]
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={NUM_DEVICES}")
  env["JAX_PLATFORMS"] = "cpu"
  result = subprocess.run(
    # Explicit axes: the auto-axis mesh of the default run is the one section 1 tests.
    [
      sys.executable,
      str(root / "examples" / "data_parallel.py"),
      "--steps",
      "5",
      "--mesh",
      "explicit",
    ],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=180,
  )
  assert result.returncode == 0, result.stdout + result.stderr
  assert "explicit mesh" in result.stdout
  assert "jit + NamedSharding" in result.stdout and "shard_map" in result.stdout
  assert "replicas identical: True" in result.stdout
