"""One process of the multi-host run of ``tests/test_multihost.py``.

Run as::

  python multihost_worker.py PORT PROCESS_ID NUM_PROCESSES OUT.npz

It joins the ``jax.distributed`` coordinator at ``127.0.0.1:PORT`` (CPU collectives over
gloo), trains with :func:`train` on the mesh of all processes' devices and saves the final
parameters, gathered to every process, to ``OUT.npz``. The test calls the same :func:`train`
in a single process on eight devices for the reference: multi-host is the same code as
multi-device.
"""

from __future__ import annotations

import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import fsgld_optax

AXIS = "data"
STEPS = 20
GLOBAL_BATCH = 32
FEATURES = 8

# Data parallel with the paper's n = 1; FSDP with four perturbations on split batches and the
# cheap bit-packed distributions.
LAYOUTS: dict[str, dict[str, Any]] = {
  "data_parallel": dict(n_perturbations=1),
  "fsdp": dict(
    n_perturbations=4, split_batch=True, perturbation="rademacher", langevin_noise="binomial"
  ),
}


def init_params() -> dict[str, np.ndarray]:
  """The same host values in every process."""
  rng = np.random.default_rng(0)
  return {
    "w1": (rng.standard_normal((FEATURES, 32)) / np.sqrt(FEATURES)).astype(np.float32),
    "b1": np.zeros(32, np.float32),
    "w2": (rng.standard_normal((32, 4)) / np.sqrt(32)).astype(np.float32),
    "b2": np.zeros(4, np.float32),
  }


def loss_fn(params: dict[str, jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
  h = jnp.tanh(x @ params["w1"] + params["b1"][None])
  logits = h @ params["w2"] + params["b2"][None]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def global_data() -> tuple[np.ndarray, np.ndarray]:
  """Every step's global batch; each process feeds only its own rows."""
  rng = np.random.default_rng(1)
  x = rng.standard_normal((STEPS, GLOBAL_BATCH, FEATURES)).astype(np.float32)
  y = np.argmax(x @ rng.standard_normal((FEATURES, 4)), axis=-1).astype(np.int32)
  return x, y


def fsdp_spec(shape: tuple[int, ...], num_shards: int) -> P:
  """Shards the largest axis that divides evenly; replicates leaves with no such axis."""
  axes = [a for a, d in enumerate(shape) if d % num_shards == 0]
  if not axes:
    return P()
  axis = max(axes, key=lambda a: (shape[a], -a))
  return P(*[AXIS if a == axis else None for a in range(len(shape))])


def process_rows(sharding: NamedSharding, global_rows: int) -> slice:
  """The contiguous rows of a batch sharded along axis 0 that this process's devices hold."""
  index = sharding.addressable_devices_indices_map((global_rows,))
  row_slices = [s[0] for s in index.values() if s is not None]
  starts = [r.start or 0 for r in row_slices]
  stops = [global_rows if r.stop is None else r.stop for r in row_slices]
  rows = slice(min(starts), max(stops))
  if rows.stop - rows.start != sum(b - a for a, b in zip(starts, stops, strict=True)):
    raise ValueError("this process's devices are not contiguous along the batch axis")
  return rows


def train(mesh: Mesh, layout: str) -> dict[str, np.ndarray]:
  """``STEPS`` fSGLD steps on ``mesh``; returns the final parameters on every process."""
  config = dict(LAYOUTS[layout])
  tx = fsgld_optax.fsgld(0.1, 1e4, key=0, langevin_noise=config.pop("langevin_noise", "gaussian"))
  grad_fn = fsgld_optax.perturbed_value_and_grad(loss_fn, **config)

  @jax.jit
  def step(params, opt_state, x, y):
    loss, grads = grad_fn(params, opt_state, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def sharding(shape: tuple[int, ...]) -> NamedSharding:
    spec = fsdp_spec(shape, mesh.size) if layout == "fsdp" else P()
    return NamedSharding(mesh, spec)

  # Parameters: every process holds the host values and hands each local device its shard.
  params = {
    name: jax.make_array_from_callback(v.shape, sharding(v.shape), lambda index, v=v: v[index])
    for name, v in init_params().items()
  }
  opt_state = jax.jit(tx.init, out_shardings=NamedSharding(mesh, P()))(params)
  # Batches: every process feeds its own rows only.
  batch_sharding = NamedSharding(mesh, P(AXIS))
  rows = process_rows(batch_sharding, GLOBAL_BATCH)
  xs, ys = global_data()
  for k in range(STEPS):
    x = jax.make_array_from_process_local_data(batch_sharding, xs[k, rows], xs[k].shape)
    y = jax.make_array_from_process_local_data(batch_sharding, ys[k, rows], ys[k].shape)
    params, opt_state, _ = step(params, opt_state, x, y)
    jax.block_until_ready(params)  # one step in flight at a time: see test_multidevice.py
  gathered = multihost_utils.process_allgather(params, tiled=True)
  return {name: np.asarray(v) for name, v in gathered.items()}


def main(argv: list[str]) -> None:
  port, process_id, num_processes, out = int(argv[0]), int(argv[1]), int(argv[2]), argv[3]
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.config.update("jax_numpy_rank_promotion", "raise")
  jax.distributed.initialize(
    coordinator_address=f"127.0.0.1:{port}",
    num_processes=num_processes,
    process_id=process_id,
    initialization_timeout=90,
  )
  try:
    mesh = Mesh(np.array(jax.devices()), (AXIS,))
    print(
      f"process {jax.process_index()}/{jax.process_count()}: {jax.local_device_count()} local "
      f"of {jax.device_count()} devices",
      flush=True,
    )
    results = {
      f"{layout}.{name}": value for layout in LAYOUTS for name, value in train(mesh, layout).items()
    }
    np.savez(out, allow_pickle=False, **results)
    print(f"process {process_id}: saved {len(results)} arrays to {out}", flush=True)
  finally:
    jax.distributed.shutdown()


if __name__ == "__main__":
  main(sys.argv[1:])
