"""Data-parallel fSGLD on several devices: ``jit`` with ``NamedSharding``, then ``shard_map``.

Trains a small MLP on scikit-learn's 8x8 digits (offline; synthetic data with ``--data
synthetic``) twice with the same key and the same batches:

1. ``jit`` + ``NamedSharding``: parameters replicated, each batch sharded over a 1-D mesh of
   all devices. ``fsgld`` and ``perturbed_value_and_grad`` are used unchanged; XLA inserts
   the gradient all-reduce, and the perturbations ε and the Langevin noise ξ are drawn shard
   by shard like the parameters.
2. ``jax.shard_map`` with ``axis_name``: each device runs the step on its slice of the batch;
   the wrapper averages the loss and gradient over the axis (``lax.pmean``); ξ and, by
   default, ε are the same on every device, so the replicas stay identical.

On a CPU machine, force eight devices::

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python examples/data_parallel.py

``--mesh explicit`` builds the mesh with explicit axes (``jax.sharding.AxisType.Explicit``:
every array's type carries its sharding) instead of the default auto axes; the code is the
same, and so are the results.

On a GPU or TPU pod (one process per host), call ``jax.distributed.initialize()`` first
(``--distributed``); the mesh spans ``jax.devices()`` of all hosts and the rest is the same.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import fsgld_optax

AXIS = "data"


def load_data(kind: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Standardised train/test features and integer labels."""
  rng = np.random.default_rng(seed)
  if kind == "digits":
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
  else:
    x = rng.standard_normal((2000, 64))
    y = np.argmax(x @ rng.standard_normal((64, 10)), axis=1)
  order = rng.permutation(len(x))
  x, y = x[order].astype(np.float32), y[order].astype(np.int32)
  n_test = len(x) // 5
  mean, std = x[n_test:].mean(0), x[n_test:].std(0) + 1e-6
  x = (x - mean) / std
  return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def init_params(key: jax.Array, sizes: tuple[int, ...]) -> list[dict[str, jax.Array]]:
  keys = jax.random.split(key, len(sizes) - 1)
  return [
    {"w": jax.random.normal(k, (m, n)) * np.sqrt(2.0 / m), "b": jnp.zeros(n)}
    for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
  ]


def logits_fn(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
  for layer in params[:-1]:
    x = jax.nn.relu(x @ layer["w"] + layer["b"][None])
  return x @ params[-1]["w"] + params[-1]["b"][None]


def loss_fn(params: list[dict[str, jax.Array]], x: jax.Array, y: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits_fn(params, x), y).mean()


@jax.jit
def accuracy(params: list[dict[str, jax.Array]], x: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.mean(jnp.argmax(logits_fn(params, x), axis=-1) == y)


def global_batch(sharding: NamedSharding, x: np.ndarray, y: np.ndarray) -> tuple[Any, Any]:
  """A global batch from each process's rows: on one host, a plain sharded ``device_put``."""
  rows = np.array_split(np.arange(len(x)), jax.process_count())[jax.process_index()]
  return (
    jax.make_array_from_process_local_data(sharding, x[rows], x.shape),
    jax.make_array_from_process_local_data(sharding, y[rows], y.shape),
  )


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, steps: int, seed: int):
  rng = np.random.default_rng(seed)
  for _ in range(steps):
    idx = rng.choice(len(x), batch_size, replace=False)
    yield x[idx], y[idx]


def main() -> None:
  parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--batch-size", type=int, default=128, help="global batch size")
  parser.add_argument("--learning-rate", type=float, default=0.05)
  parser.add_argument("--beta", type=float, default=1e8, help="inverse temperature β")
  parser.add_argument("--n-perturbations", type=int, default=1)
  parser.add_argument("--per-device-perturbations", action="store_true")
  parser.add_argument("--data", choices=["digits", "synthetic"], default="digits")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--mesh", choices=["auto", "explicit"], default="auto", help="axis type")
  parser.add_argument("--distributed", action="store_true", help="jax.distributed.initialize()")
  args = parser.parse_args()
  if args.distributed:
    jax.distributed.initialize()  # TPU pods, SLURM and Kubernetes: no arguments needed.

  axis_type = AxisType.Explicit if args.mesh == "explicit" else AxisType.Auto
  mesh = jax.make_mesh((jax.device_count(),), (AXIS,), axis_types=(axis_type,))
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P(AXIS))
  batch_size = args.batch_size - args.batch_size % mesh.size or mesh.size
  x_train, y_train, x_test, y_test = load_data(args.data, args.seed)
  print(
    f"{jax.device_count()} {jax.devices()[0].platform} devices in {jax.process_count()} "
    f"process(es), {args.mesh} mesh {dict(mesh.shape)}, global batch {batch_size}, "
    f"{args.data}: "
    f"{len(x_train)} train / {len(x_test)} test"
  )
  tx = fsgld_optax.fsgld(args.learning_rate, args.beta, weight_decay=5e-4, key=args.seed)
  params0 = init_params(jax.random.key(args.seed), (x_train.shape[1], 128, 10))
  split = args.n_perturbations > 1

  # 1. jit + NamedSharding: the same code as on one device.
  grad_fn = fsgld_optax.perturbed_value_and_grad(
    loss_fn, n_perturbations=args.n_perturbations, split_batch=split
  )

  @jax.jit
  def jit_step(params, opt_state, x, y):
    loss, grads = grad_fn(params, opt_state, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  # 2. shard_map: the step body sees one device's slice of the batch.
  mapped_grad_fn = fsgld_optax.perturbed_value_and_grad(
    loss_fn,
    n_perturbations=args.n_perturbations,
    split_batch=split,
    axis_name=AXIS,
    per_device_perturbations=args.per_device_perturbations,
  )

  def local_step(params, opt_state, x, y):
    loss, grads = mapped_grad_fn(params, opt_state, x, y)  # pmean'd over AXIS
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  shard_map_step = jax.jit(
    jax.shard_map(
      local_step,
      mesh=mesh,
      in_specs=(P(), P(), P(AXIS), P(AXIS)),
      out_specs=(P(), P(), P()),
    )
  )

  on_cpu = jax.devices()[0].platform == "cpu"
  results = {}
  with jax.set_mesh(mesh):  # the mesh (and its axis types) for every step
    for name, step in [
      ("jit + NamedSharding", jit_step),
      (f"shard_map, axis_name={AXIS!r}", shard_map_step),
    ]:
      params = jax.device_put(params0, replicated)
      # The state (count, key, σ) starts replicated on the mesh, as every step returns it; a
      # plain tx.init(params) leaves it on one device and the second step would recompile.
      opt_state = jax.jit(tx.init, out_shardings=replicated)(params)
      start = time.perf_counter()
      data = batches(x_train, y_train, batch_size, args.steps, args.seed)
      for k, (xb, yb) in enumerate(data):
        params, opt_state, loss = step(params, opt_state, *global_batch(batch_sharding, xb, yb))
        if on_cpu:
          # XLA:CPU runs every forced host device on a shared thread pool: with several steps'
          # all-reduces in flight on a machine with few cores, the rendezvous can starve and
          # abort. Finishing each step first avoids that; GPUs and TPUs don't need it.
          jax.block_until_ready(params)
        if (k + 1) % max(args.steps // 4, 1) == 0 or k + 1 == args.steps:
          print(f"[{name}] step {k + 1:4d}  loss {float(loss):.4f}")
      acc = float(accuracy(params, *jax.device_put((x_test, y_test), replicated)))
      print(f"[{name}] test accuracy {acc:.3f} ({time.perf_counter() - start:.1f} s)")
      results[name] = params

  # Every device holds its own copy of the replicated parameters: they are bitwise equal.
  shard_map_params = results[f"shard_map, axis_name={AXIS!r}"]
  copies = [np.asarray(s.data) for s in shard_map_params[0]["w"].addressable_shards]
  print(f"replicas identical: {all(np.array_equal(c, copies[0]) for c in copies)}")
  gaps = jax.tree.map(
    lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
    results["jit + NamedSharding"],
    shard_map_params,
  )
  note = (
    " (n × devices perturbations per step: a different chain)"
    if args.per_device_perturbations
    else ""
  )
  print(f"max |θ_jit − θ_shard_map| = {max(jax.tree.leaves(gaps)):.2e}{note}")


if __name__ == "__main__":
  main()
