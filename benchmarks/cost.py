"""Step time and compiled memory of fSGLD against SGD, SAM and SGLD.

What is measured (``python -m benchmarks.cost``; ``--quick`` for a smoke run of under a
minute):

* Workloads: the CIFAR-style ResNet-18 of :mod:`benchmarks.models` (11.2M parameters, 32x32x3
  inputs, 10 classes) at batch 128 and 64, and the MNIST-1D 1-D CNN (64,618 parameters, 40x1
  inputs) at batch 128, each a full training step with BatchNorm in training mode
  (``jax.value_and_grad`` with the running statistics as aux), softmax cross-entropy on random
  inputs of the right shape, weight decay 5e-4 for every method.
* Methods: SGD (``optax.sgd`` after ``optax.add_decayed_weights``); SAM (``optax.contrib.sam``
  in opaque mode: the gradient at θ, then at θ + ρ g/‖g‖, two gradient evaluations per step);
  SGLD (:func:`fsgld_optax.sgld`, plain gradient); fSGLD with n ∈ {1, 2, 4, 8} perturbations,
  with and without ``split_batch``, in the default mode (Gaussian ε and ξ) and the cheap mode
  (Rademacher ε, binomial ξ). Rows with n > 1 evaluate the perturbations one after another
  (``perturbation_batch_size=1``), the fast choice for convolutions on CPU; the rows marked
  "vmapped" evaluate all n at once (the default, ``None``). Two reference rows time the
  random numbers alone: two standard normal draws over the parameters with
  ``jax.random.normal``, and with the fused draws fSGLD uses
  (:func:`fsgld_optax._randomness.standard_noise_like`). One ablation row, SGD with its
  gradient taken at a materialised copy θ + σ, is fSGLD without its random numbers: fSGLD's
  extra time over SGD is the copy (this row − SGD) plus the draws (fSGLD − this row).
* An optimizer-only microbenchmark on a 25M-parameter pytree (conv- and dense-shaped leaves,
  a given gradient): the SGD update; two ``jax.random.normal`` draws plus the SGD update; the
  fSGLD update plus the perturbed copy θ + σε, in both modes.

Every step is jitted with its parameters and BatchNorm statistics donated, compiled once
(``lower(...).compile()``, whose ``memory_analysis()`` gives the memory columns), run once to
warm up, then timed with ``jax.block_until_ready`` in interleaved rounds (every method once
per round, in a rotated order) so that load from other processes hits all methods alike.
Tables report the median step time and its ratio to the median SGD step of the same process.
Memory: ``temp`` is XLA's scratch allocation; peak ≈ arguments + outputs − aliased + temp;
"extra" is the temp of a method minus SGD's, in units of the parameter bytes.

Writes ``cost.json``, ``cost.md`` and ``cost.png`` to the output folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
from tqdm.auto import tqdm

import fsgld_optax
from benchmarks import _report, models
from fsgld_optax import _randomness

__all__ = ["QUICK", "Config", "Method", "Workload", "check", "main", "markdown", "plot", "run"]


LEARNING_RATE, WEIGHT_DECAY, BETA, ETA, RHO = 0.05, 5e-4, 1e8, 0.1, 0.05
#: Momentum of SGD-M and fSGHMC, AdamW's learning rate and decoupled weight decay, RWP's σ.
MOMENTUM, ADAM_LEARNING_RATE, ADAMW_WEIGHT_DECAY, RWP_SIGMA = 0.9, 1e-3, 0.05, 0.01
DEFAULT_MODE = ("gaussian", "gaussian")  # (perturbation, langevin_noise)
CHEAP_MODE = ("rademacher", "binomial")


@dataclasses.dataclass(frozen=True)
class Method:
  """One timed step.

  Attributes:
    name: the row label.
    kind: ``"sgd"``, ``"sam"``, ``"sgld"``, ``"fsgld"``, ``"draws"`` (two normal draws
      over the parameters and nothing else, ``sampler`` says whose) or ``"copy"`` (SGD with
      the gradient taken at a materialised copy θ + σ: fSGLD's perturbed copy without its
      draws, so that fSGLD's extra time splits into the copy and the draws).
    n: perturbations per step (fSGLD).
    split: ``split_batch`` (fSGLD).
    cheap: Rademacher ε and binomial ξ instead of Gaussian (fSGLD).
    group: ``perturbation_batch_size`` (fSGLD, n > 1): 1 evaluates the perturbations one after
      another, ``None`` all at once with ``jax.vmap``.
    sampler: ``"jax"`` (``jax.random.normal``) or ``"fused"`` (fSGLD's draws), for ``draws``.
    baseline: the row this one is compared with (``ratio_to_baseline``): SGD for fSGLD,
      SGD-M for fSGHMC, AdamW for RWP-AdamW and SAM-AdamW.
    scale: the ``perturbation_scale`` of the perturbed kinds.
    timed: ``False``: compiled for its memory and compile time only, not timed.

  The kinds of the toolbox run (:data:`TOOLBOX`): ``"sgd_momentum"`` (SGD with heavy-ball
  momentum :data:`MOMENTUM`), ``"fsghmc"`` (:func:`fsgld_optax.fsghmc` with the same
  momentum, gradient at θ + ε), ``"adamw"`` (``optax.adamw``), ``"rwp_adamw"``
  (``optax.chain(fsgld_optax.rwp(σ), optax.adamw(...))``, gradient at θ + ε) and
  ``"sam_adamw"`` (``optax.contrib.sam`` around AdamW).
  """

  name: str
  kind: str
  n: int = 1
  split: bool = False
  cheap: bool = False
  group: int | None = 1
  sampler: str = "fused"
  baseline: str = "SGD"
  scale: Literal["isotropic", "filter", "element"] = "isotropic"
  timed: bool = True


@dataclasses.dataclass(frozen=True)
class Workload:
  """A model, an input shape and a batch size, with the methods to time on it.

  Attributes:
    name: the label in the tables.
    model: a name for :func:`benchmarks.models.create_model`.
    model_kwargs: extra constructor arguments (e.g. a smaller ``width`` for quick runs).
    input_shape: one example's shape.
    batch: the batch size.
    methods: the methods timed on this workload.
    repeats: timed rounds.
    inner: steps per timing sample (several for fast steps, so timer noise stays small).
  """

  name: str
  model: str
  model_kwargs: tuple[tuple[str, Any], ...]
  input_shape: tuple[int, ...]
  batch: int
  methods: tuple[Method, ...]
  repeats: int
  inner: int = 1


def fsgld_method(n: int, split: bool, cheap: bool, group: int | None = 1) -> Method:
  label = f"fSGLD n={n}" + (" split" if split else "")
  if n > 1 and group is None:
    label += ", vmapped"
  return Method(
    label + (" (cheap)" if cheap else " (default)"), "fsgld", n, split, cheap, group=group
  )


def fsgld_methods(
  ns: Sequence[int], splits: Sequence[bool], cheap_splits: Sequence[bool]
) -> list[Method]:
  """fSGLD rows: n = 1 in both modes, then every n > 1 with ``splits`` in the default mode
  and ``cheap_splits`` in the cheap mode (splitting is moot at n = 1)."""
  out = [fsgld_method(1, False, False), fsgld_method(1, False, True)]
  for cheap, modes in ((False, splits), (True, cheap_splits)):
    out += [fsgld_method(n, split, cheap) for split in modes for n in ns if n > 1]
  return out


BASELINES = (
  Method("SGD", "sgd"),
  Method("SAM", "sam"),
  Method("SGLD", "sgld"),
  Method("2 normal draws (jax.random.normal)", "draws", sampler="jax"),
  Method("2 normal draws (fused)", "draws", sampler="fused"),
  Method("SGD at a copy θ + σ (no draws)", "copy"),
)
VMAPPED = (fsgld_method(8, True, False, group=None),)
ALL_FSGLD = tuple(fsgld_methods((1, 2, 4, 8), (False, True), (False, True))) + VMAPPED
# Unsplit n > 1 costs n gradients whatever the mode, so on the ResNet it runs in one mode only.
GRID_FSGLD = tuple(fsgld_methods((1, 2, 4, 8), (False, True), (True,))) + VMAPPED
CORE_FSGLD = tuple(fsgld_methods((1, 8), (True,), (True,)))


@dataclasses.dataclass(frozen=True)
class Config:
  """What to run.

  Attributes:
    workloads: the model workloads.
    micro_shapes: leaf shapes of the optimizer-only microbenchmark's pytree.
    micro_repeats: its timed rounds.
    seed: seed of the inputs, parameters and optimizer keys.
  """

  workloads: tuple[Workload, ...]
  micro_shapes: tuple[tuple[int, ...], ...]
  micro_repeats: int
  seed: int = 0


# About 25M parameters: conv kernels, dense matrices, biases and a classifier head.
MICRO_SHAPES = (
  *((3, 3, 256, 512),) * 12,
  *((1024, 2048),) * 5,
  *((512,),) * 24,
  (2048, 100),
  (100,),
)

# The default run: the whole grid on the 1-D CNN; on ResNet-18 at batch 64 the whole grid
# except unsplit n > 1 in the cheap mode (n gradients per step whatever the mode); at batch 128
# only n = 1 and n = 8 split. About 25 minutes on 2 otherwise idle CPU cores.
DEFAULT = Config(
  workloads=(
    Workload(
      "ResNet-18, batch 128",
      "resnet18",
      (),
      (32, 32, 3),
      128,
      BASELINES + CORE_FSGLD,
      repeats=5,
    ),
    Workload(
      "ResNet-18, batch 64", "resnet18", (), (32, 32, 3), 64, BASELINES + GRID_FSGLD, repeats=5
    ),
    Workload(
      "MNIST-1D CNN, batch 128",
      "cnn1d",
      (),
      (40, 1),
      128,
      BASELINES + ALL_FSGLD,
      repeats=15,
      inner=10,
    ),
  ),
  micro_shapes=MICRO_SHAPES,
  micro_repeats=7,
)

# Tiny shapes and few rows, for a smoke run: a narrow 1-D CNN and a small pytree.
_QUICK_METHODS = (
  *BASELINES,
  *fsgld_methods((1, 2), (True,), (True,)),
  fsgld_method(2, True, False, group=None),
)
QUICK = Config(
  workloads=(
    Workload(
      "MNIST-1D CNN (one 8-channel block), batch 16",
      "cnn1d",
      (("features", (8,)),),
      (40, 1),
      16,
      _QUICK_METHODS,
      repeats=3,
      inner=5,
    ),
  ),
  micro_shapes=((64, 256), (3, 3, 16, 32), (100,)),
  micro_repeats=3,
)


# The toolbox run (``python -m benchmarks.cost --toolbox``): fSGHMC against SGD-M, RWP-AdamW
# (isotropic and filter-wise σ) and SAM-AdamW against AdamW, the memory of n = 8 evaluated one
# perturbation at a time against n = 1, and the compile time against n.
def toolbox_methods(
  ns: Sequence[int], *, vmapped: bool, filter_rwp: bool, sam: bool = True, time_n: bool = True
) -> tuple[Method, ...]:
  """The rows of the toolbox run: baselines, momentum, AdamW family, then fSGLD against n."""
  rows = [
    Method("SGD", "sgd"),
    Method("SGD-M", "sgd_momentum"),
    Method("fSGHMC (default)", "fsghmc", baseline="SGD-M"),
    Method("fSGHMC (cheap)", "fsghmc", cheap=True, baseline="SGD-M"),
    Method("AdamW", "adamw"),
    Method("RWP-AdamW", "rwp_adamw", baseline="AdamW"),
  ]
  if filter_rwp:
    rows.append(Method("RWP-AdamW (filter)", "rwp_adamw", baseline="AdamW", scale="filter"))
  if sam:
    rows.append(Method("SAM-AdamW", "sam_adamw", baseline="AdamW"))
  rows += [dataclasses.replace(fsgld_method(n, n > 1, False), timed=time_n) for n in ns]
  if vmapped:
    rows.append(dataclasses.replace(fsgld_method(max(ns), True, False, group=None), timed=time_n))
  return tuple(rows)


TOOLBOX = Config(
  workloads=(
    Workload(
      "MNIST-1D CNN, batch 128",
      "cnn1d",
      (),
      (40, 1),
      128,
      toolbox_methods((1, 2, 4, 8), vmapped=True, filter_rwp=True),
      repeats=15,
      inner=10,
    ),
    # Batch 32 keeps the ResNet part to minutes on 2 shared cores; the GPU script
    # (benchmarks/gpu.py) times batch 128.
    Workload(
      "ResNet-18, batch 32",
      "resnet18",
      (),
      (32, 32, 3),
      32,
      toolbox_methods((1, 8), vmapped=False, filter_rwp=False, sam=False, time_n=False),
      repeats=3,
    ),
  ),
  micro_shapes=(),
  micro_repeats=0,
)
TOOLBOX_QUICK = Config(
  workloads=(
    Workload(
      "MNIST-1D CNN (one 8-channel block), batch 16",
      "cnn1d",
      (("features", (8,)),),
      (40, 1),
      16,
      toolbox_methods((1, 2), vmapped=True, filter_rwp=True, time_n=False),
      repeats=2,
      inner=2,
    ),
  ),
  micro_shapes=(),
  micro_repeats=0,
)


def build_model(workload: Workload) -> Any:
  return models.create_model(workload.model, 10, **dict(workload.model_kwargs))


def make_loss(model: Any) -> Callable[..., Any]:
  """Softmax cross-entropy in training mode; the updated BatchNorm statistics as aux."""

  def loss_fn(params: Any, batch_stats: Any, x: jax.Array, y: jax.Array) -> Any:
    logits, updates = model.apply(
      {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
    )
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, updates["batch_stats"]

  return loss_fn


def sgd() -> optax.GradientTransformation:
  return optax.chain(optax.add_decayed_weights(WEIGHT_DECAY), optax.sgd(LEARNING_RATE))


def make_fsgld(method: Method, key: int) -> optax.GradientTransformationExtraArgs:
  noise = CHEAP_MODE[1] if method.cheap else DEFAULT_MODE[1]
  if method.kind == "fsghmc":
    return fsgld_optax.fsghmc(
      LEARNING_RATE * (1 - MOMENTUM),
      BETA,
      momentum=MOMENTUM,
      eta=ETA,
      weight_decay=WEIGHT_DECAY,
      key=key,
      langevin_noise=noise,
    )
  if method.kind == "rwp_adamw":
    return optax.chain(fsgld_optax.rwp(RWP_SIGMA, key=key), adamw())  # pyright: ignore[reportReturnType]
  return fsgld_optax.fsgld(
    LEARNING_RATE, BETA, eta=ETA, weight_decay=WEIGHT_DECAY, key=key, langevin_noise=noise
  )


def sgd_momentum() -> optax.GradientTransformation:
  return optax.chain(
    optax.add_decayed_weights(WEIGHT_DECAY), optax.sgd(LEARNING_RATE * (1 - MOMENTUM), MOMENTUM)
  )


def adamw() -> optax.GradientTransformation:
  return optax.adamw(ADAM_LEARNING_RATE, weight_decay=ADAMW_WEIGHT_DECAY)


def draw_two(sampler: str) -> Callable[[jax.Array, Any], Any]:
  """Two independent standard-normal trees shaped like ``params``."""

  def draws(key: jax.Array, params: Any) -> Any:
    k1, k2 = jax.random.split(key)
    if sampler == "jax":
      return (
        optax.tree.random_like(k1, params, jax.random.normal),
        optax.tree.random_like(k2, params, jax.random.normal),
      )
    return (
      _randomness.standard_noise_like(k1, params, "gaussian"),
      _randomness.standard_noise_like(k2, params, "gaussian"),
    )

  return draws


def model_step(method: Method, loss_fn: Callable[..., Any], key: int) -> tuple[Callable, Any]:
  """``step(params, opt_state, batch_stats, x, y) -> (params, opt_state, batch_stats, loss)``
  and the optimizer whose ``init`` gives ``opt_state``."""
  value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

  if method.kind in ("sgd", "sgld", "sgd_momentum", "adamw"):
    tx = {
      "sgd": sgd,
      "sgd_momentum": sgd_momentum,
      "adamw": adamw,
      "sgld": lambda: fsgld_optax.sgld(LEARNING_RATE, BETA, weight_decay=WEIGHT_DECAY, key=key),
    }[method.kind]()

    def step(params, opt_state, batch_stats, x, y):
      (loss, batch_stats), grads = value_and_grad(params, batch_stats, x, y)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, batch_stats, loss

    return step, tx

  if method.kind in ("sam", "sam_adamw"):
    tx = optax.contrib.sam(
      sgd() if method.kind == "sam" else adamw(),
      optax.chain(optax.contrib.normalize(), optax.sgd(RHO)),
      sync_period=2,
      opaque_mode=True,
    )

    def sam_step(params, opt_state, batch_stats, x, y):
      (loss, new_stats), grads = value_and_grad(params, batch_stats, x, y)
      grad_fn = jax.grad(lambda p, _: loss_fn(p, batch_stats, x, y)[0])
      updates, opt_state = tx.update(grads, opt_state, params, grad_fn=grad_fn)
      return optax.apply_updates(params, updates), opt_state, new_stats, loss

    return sam_step, tx

  if method.kind == "copy":
    tx = sgd()
    shift = float(fsgld_optax.coupled_sigma(BETA, ETA))

    def copy_step(params, opt_state, batch_stats, x, y):
      shifted = jax.tree.map(lambda p: _randomness.materialize(p + shift), params)
      (loss, batch_stats), grads = value_and_grad(shifted, batch_stats, x, y)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, batch_stats, loss

    return copy_step, tx

  if method.kind == "draws":
    draws = draw_two(method.sampler)
    tx = sgd()

    def draws_step(params, opt_state, batch_stats, x, y):
      del x, y
      return draws(jax.random.key(key), params), opt_state, batch_stats, jnp.zeros(())

    return draws_step, tx

  tx = make_fsgld(method, key)
  grad_fn = fsgld_optax.perturbed_value_and_grad(
    loss_fn,
    has_aux=True,
    n_perturbations=method.n,
    split_batch=method.split,
    perturbation=CHEAP_MODE[0] if method.cheap else DEFAULT_MODE[0],
    batch_argnums=(1, 2),
    perturbation_batch_size=method.group,
    perturbation_scale=method.scale,
    aux_reduction="mean",  # the BatchNorm statistics: one update with their mean
  )

  def fsgld_step(params, opt_state, batch_stats, x, y):
    (loss, batch_stats), grads = grad_fn(params, opt_state, batch_stats, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, batch_stats, loss

  return fsgld_step, tx


def memory(compiled: Any) -> dict[str, int | None]:
  """XLA's memory statistics of a compiled computation (``None`` where unavailable)."""
  stats = compiled.memory_analysis()
  if stats is None:  # pragma: no cover - some backends report nothing
    return {"temp": None, "argument": None, "output": None, "alias": None, "peak": None}
  temp, argument = int(stats.temp_size_in_bytes), int(stats.argument_size_in_bytes)
  output, alias = int(stats.output_size_in_bytes), int(stats.alias_size_in_bytes)
  return {
    "temp": temp,
    "argument": argument,
    "output": output,
    "alias": alias,
    "peak": argument + output - alias + temp,
  }


def tree_bytes(tree: Any) -> int:
  return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def copy_tree(tree: Any) -> Any:
  return jax.tree.map(jnp.copy, tree)


def time_interleaved(
  runners: dict[str, Callable[[], None]], repeats: int, bar: Any
) -> dict[str, list[float]]:
  """A warm-up round, then ``repeats`` timed rounds; each round calls every runner once, in an
  order rotated from round to round."""
  names = list(runners)
  times: dict[str, list[float]] = {name: [] for name in names}
  for r in range(repeats + 1):
    shift = r % len(names)
    for name in names[shift:] + names[:shift]:
      start = time.perf_counter()
      runners[name]()
      if r:
        times[name].append(time.perf_counter() - start)
      bar.update(1)
  return times


def run_workload(workload: Workload, seed: int, bar: Any) -> dict[str, Any]:
  """Compiles, warms up and times every method of ``workload``."""
  model = build_model(workload)
  key_init, key_x, key_y = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(key_x, (workload.batch, *workload.input_shape))
  y = jax.random.randint(key_y, (workload.batch,), 0, 10)
  variables = jax.jit(lambda k: model.init(k, x[:1], train=False))(key_init)
  params, batch_stats = variables["params"], variables["batch_stats"]
  loss_fn = make_loss(model)
  param_bytes = tree_bytes(params)

  rows: dict[str, dict[str, Any]] = {}
  runners: dict[str, Callable[[], None]] = {}
  for method in workload.methods:
    bar.set_postfix_str(f"{workload.name}: compile {method.name}")
    step, tx = model_step(method, loss_fn, seed)
    args = [copy_tree(params), tx.init(params), copy_tree(batch_stats)]
    start = time.perf_counter()
    if method.kind == "draws":
      compiled = jax.jit(step).lower(*args, x, y).compile()
    else:
      compiled = jax.jit(step, donate_argnums=(0, 2)).lower(*args, x, y).compile()
    compile_s = time.perf_counter() - start
    bar.update(1)
    rows[method.name] = {
      **dataclasses.asdict(method),
      "compile_s": compile_s,
      "memory": memory(compiled),
    }

    def runner(compiled=compiled, args=args, method=method) -> None:
      for _ in range(workload.inner):
        out = compiled(*args, x, y)
        if method.kind != "draws":
          args[:] = out[:3]
      jax.block_until_ready(out)

    if method.timed:
      runners[method.name] = runner
    else:
      rows[method.name] |= {"times_s": [], "median_s": None}

  bar.set_postfix_str(f"{workload.name}: timing")
  times = time_interleaved(runners, workload.repeats, bar)
  for name, ts in times.items():
    per_step = [t / workload.inner for t in ts]
    rows[name]["times_s"] = per_step
    rows[name]["median_s"] = statistics.median(per_step)
  finish_rows(rows, param_bytes)
  return {
    "name": workload.name,
    "model": workload.model,
    "batch": workload.batch,
    "input_shape": list(workload.input_shape),
    "num_params": int(sum(x.size for x in jax.tree.leaves(params))),
    "param_bytes": param_bytes,
    "repeats": workload.repeats,
    "inner": workload.inner,
    "rows": list(rows.values()),
  }


def finish_rows(rows: dict[str, dict[str, Any]], param_bytes: int) -> None:
  """Adds ratios to SGD's time and SGD's temp memory (in parameter-bytes units)."""
  base = rows["SGD"]
  for row in rows.values():
    timed = row["median_s"] is not None
    row["ratio_to_sgd"] = row["median_s"] / base["median_s"] if timed else None
    reference = rows.get(row.get("baseline", "SGD"))
    row["ratio_to_baseline"] = (
      None if reference is None or not timed else row["median_s"] / reference["median_s"]
    )
    temp, base_temp = row["memory"]["temp"], base["memory"]["temp"]
    row["extra_temp_over_param_bytes"] = (
      None
      if temp is None or base_temp is None or row.get("kind") == "draws"
      else (temp - base_temp) / param_bytes
    )


def run_micro(shapes: Sequence[tuple[int, ...]], repeats: int, seed: int, bar: Any) -> dict:
  """The optimizer-only microbenchmark: updates and draws on a pytree, with a given gradient."""
  keys = jax.random.split(jax.random.key(seed), len(shapes))
  params = {
    f"p{i:02d}": jax.random.normal(k, s) for i, (k, s) in enumerate(zip(keys, shapes, strict=True))
  }
  grads = jax.tree.map(lambda p: 1e-3 * p, params)
  param_bytes = tree_bytes(params)
  sigma = float(fsgld_optax.coupled_sigma(BETA, ETA))
  noise_scale = float(np.sqrt(2 * LEARNING_RATE / BETA))
  tx_sgd = sgd()

  def sgd_update(params, opt_state, grads, key):
    del key
    updates, opt_state = tx_sgd.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, params

  def reference(sampler: str) -> Callable:
    draws = draw_two(sampler)

    def step(params, opt_state, grads, key):
      eps, xi = draws(key, params)
      perturbed = jax.tree.map(lambda p, e: p + sigma * e, params, eps)
      updates, opt_state = tx_sgd.update(grads, opt_state, params)
      updates = jax.tree.map(lambda u, x: u + noise_scale * x, updates, xi)
      return optax.apply_updates(params, updates), opt_state, perturbed

    return step

  def fsgld_update(cheap: bool) -> tuple[Callable, Any]:
    tx = make_fsgld(Method("", "fsgld", cheap=cheap), seed)
    perturb = fsgld_optax.perturbed_value_and_grad(
      lambda p: (jnp.zeros(()), p),
      has_aux=True,
      perturbation=CHEAP_MODE[0] if cheap else DEFAULT_MODE[0],
    )

    def step(params, opt_state, grads, key):
      del key
      (_, perturbed), _ = perturb(params, opt_state)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, perturbed

    return step, tx

  cases: list[tuple[str, Callable, Any]] = [
    ("SGD update", sgd_update, tx_sgd),
    ("2 jax.random.normal draws + SGD update", reference("jax"), tx_sgd),
    ("2 fused normal draws + SGD update", reference("fused"), tx_sgd),
    ("fSGLD update + perturbation (default)", *fsgld_update(False)),
    ("fSGLD update + perturbation (cheap)", *fsgld_update(True)),
  ]
  rows: dict[str, dict[str, Any]] = {}
  runners: dict[str, Callable[[], None]] = {}
  key = jax.random.key(seed + 1)
  for name, step, tx in cases:
    bar.set_postfix_str(f"microbenchmark: compile {name}")
    args = [copy_tree(params), tx.init(params)]
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0,)).lower(*args, grads, key).compile()
    compile_s = time.perf_counter() - start
    bar.update(1)
    rows[name] = {"name": name, "compile_s": compile_s, "memory": memory(compiled)}

    def runner(compiled=compiled, args=args) -> None:
      out = compiled(*args, grads, key)
      args[:] = out[:2]
      jax.block_until_ready(out)

    runners[name] = runner
  bar.set_postfix_str("microbenchmark: timing")
  times = time_interleaved(runners, repeats, bar)
  for name, ts in times.items():
    rows[name]["times_s"] = ts
    rows[name]["median_s"] = statistics.median(ts)
  rows["SGD"] = rows.pop("SGD update")  # finish_rows' baseline
  finish_rows(rows, param_bytes)
  rows["SGD update"] = rows.pop("SGD")
  order = [name for name, _, _ in cases]
  return {
    "num_params": int(sum(x.size for x in jax.tree.leaves(params))),
    "param_bytes": param_bytes,
    "num_leaves": len(shapes),
    "repeats": repeats,
    "rows": [rows[name] for name in order],
  }


def run(config: Config, *, progress: bool = True) -> dict[str, Any]:
  """Runs every workload and the microbenchmark; returns the results as a JSON-able dict.

  A config without ``micro_shapes`` (the toolbox run) skips the microbenchmark.
  """
  micro_units = 5 * (2 + config.micro_repeats) if config.micro_shapes else 0
  units = micro_units + sum(
    len(w.methods) + sum(m.timed for m in w.methods) * (1 + w.repeats) for w in config.workloads
  )
  start, load_start = time.perf_counter(), os.getloadavg()[0]
  with tqdm(total=units, desc="cost", disable=not progress) as bar:
    workloads = [run_workload(w, config.seed, bar) for w in config.workloads]
    micro = (
      run_micro(config.micro_shapes, config.micro_repeats, config.seed, bar)
      if config.micro_shapes
      else None
    )
  results = {
    "config": {"seed": config.seed},
    "workloads": workloads,
    "micro": micro,
    "environment": {**_report.environment(), "load_average_1min_start": load_start},
    "wall_time_s": time.perf_counter() - start,
  }
  results["targets"] = targets(results) if micro is not None else toolbox_targets(results)
  return results


def toolbox_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
  """The targets of the toolbox run: fSGHMC's step time over SGD-M's (≤ 1.03 in the cheap
  mode, ≤ 1.10 by default), fSGHMC's extra temp memory over SGD-M's (the velocity is an
  argument, not temp: ≤ 1.1 × parameter bytes, as for fSGLD), and n = 8 evaluated one
  perturbation at a time against n = 1 (≤ 2 × parameter bytes more temp)."""
  out = []
  for w in results["workloads"]:
    rows = {r["name"]: r for r in w["rows"]}

    def add(target: str, value: float | None, limit: float, name: str = w["name"]) -> None:
      if value is not None:
        out.append(
          {
            "target": target,
            "workload": name,
            "value": value,
            "limit": limit,
            "met": value <= limit,
          }
        )

    for mode, limit in (("cheap", 1.03), ("default", 1.10)):
      row = rows.get(f"fSGHMC ({mode})")
      if row is not None:
        add(f"fSGHMC / SGD-M ({mode}) ≤ {limit:.2f}", row["ratio_to_baseline"], limit)
    hmc, base = rows.get("fSGHMC (default)"), rows.get("SGD-M")
    if hmc is not None and base is not None and hmc["memory"]["temp"] is not None:
      extra = (hmc["memory"]["temp"] - base["memory"]["temp"]) / w["param_bytes"]
      add("extra temp memory of fSGHMC over SGD-M ≤ 1.1 × parameter bytes", extra, 1.1)
    one, eight = rows.get("fSGLD n=1 (default)"), rows.get("fSGLD n=8 split (default)")
    if one is not None and eight is not None and one["memory"]["temp"] is not None:
      extra = (eight["memory"]["temp"] - one["memory"]["temp"]) / w["param_bytes"]
      add("temp of n=8 split, one at a time, − temp of n=1 ≤ 2 × parameter bytes", extra, 2.0)
  return out


def _row(workload: dict[str, Any], name: str) -> dict[str, Any] | None:
  return next((r for r in workload["rows"] if r["name"] == name), None)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
  """The cost targets, each with the measured value on every workload that has its rows."""
  out = []

  def add(target: str, workload: str, value: float | None, limit: float) -> None:
    if value is not None:
      out.append(
        {
          "target": target,
          "workload": workload,
          "value": value,
          "limit": limit,
          "met": bool(value <= limit),
        }
      )

  micro = results["micro"]
  update = _row(micro, "SGD update")
  ours = _row(micro, "fSGLD update + perturbation (default)")
  for label in ("jax.random.normal", "fused normal"):
    reference = _row(micro, f"2 {label} draws + SGD update")
    if update is not None and ours is not None and reference is not None:
      add(
        f"optimizer only: (fSGLD update + ε − SGD update) ≤ 1.15 × two {label} draws",
        f"{micro['num_params']:,}-parameter pytree",
        (ours["median_s"] - update["median_s"]) / (reference["median_s"] - update["median_s"]),
        1.15,
      )
  for w in results["workloads"]:
    sgd_row, sam = _row(w, "SGD"), _row(w, "SAM")
    one, cheap = _row(w, "fSGLD n=1 (default)"), _row(w, "fSGLD n=1 (cheap)")
    split8 = _row(w, "fSGLD n=8 split (default)")
    draws = _row(w, "2 normal draws (jax.random.normal)")
    fused = _row(w, "2 normal draws (fused)")
    if one is None or sgd_row is None:
      continue
    add("fSGLD(n=1) / SGD ≤ 1.03", w["name"], one["ratio_to_sgd"], 1.03)
    if sam is not None:
      add("fSGLD(n=1) / SAM ≤ 0.55", w["name"], one["median_s"] / sam["median_s"], 0.55)
    if split8 is not None:
      add("fSGLD(n=8, split) / SGD ≤ 1.10", w["name"], split8["ratio_to_sgd"], 1.10)
    add(
      "extra temp memory of fSGLD(n=1) ≤ 1.1 × parameter bytes",
      w["name"],
      one["extra_temp_over_param_bytes"],
      1.1,
    )
    if cheap is not None:
      add("cheap-mode fSGLD(n=1) / SGD ≤ 1.03", w["name"], cheap["ratio_to_sgd"], 1.03)
    extra = one["median_s"] - sgd_row["median_s"]
    for row, label in ((draws, "jax.random.normal"), (fused, "fused")):
      if row is not None:
        add(
          f"(fSGLD(n=1) − SGD) ≤ 1.15 × two {label} draws",
          w["name"],
          extra / row["median_s"],
          1.15,
        )
  return out


def _extra_time_split(workload: dict[str, Any]) -> list[str]:
  """A sentence splitting fSGLD's extra time over SGD into the perturbed copy and the draws."""
  rows = [
    _row(workload, name)
    for name in ("SGD", "SGD at a copy θ + σ (no draws)", "fSGLD n=1 (default)")
  ]
  reference = _row(workload, "2 normal draws (jax.random.normal)")
  if any(r is None for r in rows) or reference is None:
    return []
  sgd_s, copy_s, fsgld_s = (1e3 * r["median_s"] for r in rows if r is not None)
  return [
    f"fSGLD n=1 (default) − SGD = {fsgld_s - sgd_s:+.2f} ms per step: the perturbed copy "
    f"{copy_s - sgd_s:+.2f} ms (copy row − SGD) and the draws of ε and ξ "
    f"{fsgld_s - copy_s:+.2f} ms (fSGLD − copy row), against "
    f"{1e3 * reference['median_s']:.2f} ms for two `jax.random.normal` draws.",
    "",
  ]


def _fmt_mb(value: int | None) -> str:
  return "–" if value is None else f"{value / 2**20:.1f}"


def _fmt_extra(value: float | None) -> str:
  return "–" if value is None else f"{value:+.2f}"


def markdown(results: dict[str, Any]) -> str:
  """The Markdown report of :func:`run`'s results."""
  env = results["environment"]
  lines = [
    "# Step cost of fSGLD",
    "",
    f"JAX {env['jax']}, optax {env['optax']} on {env['backend']} ({env['device']}, "
    f"{env['cpu_count']} CPUs, 1-minute load average {env['load_average_1min_start']:.1f} at "
    f"the start and {env['load_average_1min']:.1f} at the end); whole run "
    f"{results['wall_time_s'] / 60:.1f} min. Median step time over interleaved rounds after "
    "compilation and one warm-up round; ratios against SGD in the "
    "same process. Memory from XLA's `memory_analysis()` of the compiled step: temp is the "
    "scratch allocation, peak ≈ arguments + outputs − donated + temp, extra = (temp − SGD's "
    "temp) / parameter bytes. fSGLD rows with n > 1 evaluate the perturbations one after "
    "another (`perturbation_batch_size=1`) unless marked vmapped (all n at once, the "
    "default). The draws rows time two standard-normal trees over the parameters and nothing "
    "else; the copy row is SGD with its gradient taken at a materialised copy θ + σ (fSGLD "
    "without its random numbers).",
    "",
  ]
  for w in results["workloads"]:
    lines += [
      f"## {w['name']}",
      "",
      f"{w['num_params']:,} parameters ({w['param_bytes'] / 2**20:.1f} MiB), input "
      f"{'x'.join(map(str, w['input_shape']))}; {w['repeats']} rounds"
      + (f" of {w['inner']} steps" if w["inner"] > 1 else "")
      + ".",
      "",
      "| method | step (ms) | × SGD | temp (MiB) | extra temp (× params) | peak (MiB) "
      "| compile (s) |",
      "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in w["rows"]:
      mem = r["memory"]
      lines.append(
        f"| {r['name']} | {1e3 * r['median_s']:.1f} | {r['ratio_to_sgd']:.3f} | "
        f"{_fmt_mb(mem['temp'])} | {_fmt_extra(r['extra_temp_over_param_bytes'])} | "
        f"{_fmt_mb(mem['peak'])} | {r['compile_s']:.1f} |"
      )
    lines += ["", *_extra_time_split(w)]
  micro = results["micro"]
  lines += [
    "## Optimizer only",
    "",
    f"{micro['num_params']:,} parameters in {micro['num_leaves']} leaves "
    f"({micro['param_bytes'] / 2**20:.1f} MiB), a given gradient; {micro['repeats']} rounds. "
    "The perturbation rows also write the perturbed copy θ + σε.",
    "",
    "| computation | time (ms) | × SGD update | temp (MiB) | extra temp (× params) |",
    "|---|---:|---:|---:|---:|",
  ]
  for r in micro["rows"]:
    lines.append(
      f"| {r['name']} | {1e3 * r['median_s']:.1f} | {r['ratio_to_sgd']:.2f} | "
      f"{_fmt_mb(r['memory']['temp'])} | {_fmt_extra(r['extra_temp_over_param_bytes'])} |"
    )
  lines += [
    "",
    "## Targets",
    "",
    "| target | workload | measured | met |",
    "|---|---|---:|:---:|",
  ]
  for t in results["targets"]:
    lines.append(
      f"| {t['target']} | {t['workload']} | {t['value']:.3f} | {'yes' if t['met'] else 'no'} |"
    )
  lines.append("")
  return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
  """Bar charts of the step time over SGD's and the extra temp memory, one row per workload."""
  from matplotlib.figure import Figure
  from matplotlib.ticker import NullFormatter

  workloads = results["workloads"]
  height = max(len(w["rows"]) for w in workloads) * 0.28 + 1.2
  fig = Figure(figsize=(12, height * len(workloads)))
  axes = fig.subplots(len(workloads), 2, squeeze=False)
  for (ax_time, ax_mem), w in zip(axes, workloads, strict=True):
    names = [r["name"] for r in w["rows"]]
    ypos = np.arange(len(names))
    colors = [
      {
        "sgd": "tab:gray",
        "draws": "tab:gray",
        "copy": "tab:gray",
        "sam": "tab:red",
        "sgld": "tab:green",
      }.get(r["kind"], "tab:orange" if r["cheap"] else "tab:blue")
      for r in w["rows"]
    ]
    ax_time.barh(ypos, [r["ratio_to_sgd"] for r in w["rows"]], color=colors)
    ax_time.axvline(1.0, color="k", lw=0.8, ls="--")
    ax_time.set_xscale("log")
    ax_time.xaxis.set_minor_formatter(NullFormatter())
    ax_time.set_yticks(ypos, names, fontsize=7)
    ax_time.invert_yaxis()
    ax_time.set_xlabel("step time / SGD step time")
    ax_time.set_title(w["name"], fontsize=9)
    extra = [r["extra_temp_over_param_bytes"] or 0.0 for r in w["rows"]]
    ax_mem.barh(ypos, extra, color=colors)
    ax_mem.axvline(1.1, color="k", lw=0.8, ls="--")
    ax_mem.set_yticks(ypos, [""] * len(names))
    ax_mem.invert_yaxis()
    ax_mem.set_xlabel("extra temp memory / parameter bytes")
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def markdown_toolbox(results: dict[str, Any]) -> str:
  """The Markdown report of the toolbox run (``--toolbox``)."""
  env = results["environment"]
  lines = [
    "# Step cost of the flatness toolbox",
    "",
    f"JAX {env['jax']}, optax {env['optax']} on {env['backend']} ({env['device']}, "
    f"{env['cpu_count']} CPUs, 1-minute load average {env['load_average_1min_start']:.1f} at "
    f"the start and {env['load_average_1min']:.1f} at the end); whole run "
    f"{results['wall_time_s'] / 60:.1f} min. Median step time over interleaved rounds after "
    "compilation and one warm-up round; each row's ratio is against its base optimizer in the "
    f"same process: fSGHMC (momentum {MOMENTUM}, gradient at θ + ε) against SGD-M "
    f"(`optax.sgd` with the same momentum), RWP-AdamW (`optax.chain(fsgld_optax.rwp(σ = "
    f'{RWP_SIGMA}), optax.adamw(...))`, gradient at θ + ε; "filter": '
    '`perturbation_scale="filter"`) and SAM-AdamW (`optax.contrib.sam` around AdamW, two '
    "gradients) against AdamW, fSGLD against SGD. Default mode: Gaussian ε and ξ; cheap: "
    "Rademacher ε and binomial ξ. fSGLD rows with n > 1 split the batch and evaluate the "
    "perturbations one after another (`perturbation_batch_size=1`) unless marked vmapped. "
    "Memory from XLA's `memory_analysis()`: temp is the scratch allocation, extra = (temp − "
    "SGD's temp) / parameter bytes; the optimizer state (velocity, Adam moments) is an "
    "argument, not temp.",
    "",
  ]
  for w in results["workloads"]:
    lines += [
      f"## {w['name']}",
      "",
      f"{w['num_params']:,} parameters ({w['param_bytes'] / 2**20:.1f} MiB); {w['repeats']} "
      "rounds" + (f" of {w['inner']} steps" if w["inner"] > 1 else "") + ".",
      "",
      "| method | against | step (ms) | × base | × SGD | temp (MiB) | extra temp (× params) "
      "| peak (MiB) | compile (s) |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in w["rows"]:
      mem = r["memory"]
      ratio, to_sgd, median = r["ratio_to_baseline"], r["ratio_to_sgd"], r["median_s"]
      lines.append(
        f"| {r['name']} | {r['baseline']} | "
        f"{'not timed' if median is None else f'{1e3 * median:.1f}'} | "
        f"{'–' if ratio is None else f'{ratio:.3f}'} | "
        f"{'–' if to_sgd is None else f'{to_sgd:.3f}'} | "
        f"{_fmt_mb(mem['temp'])} | {_fmt_extra(r['extra_temp_over_param_bytes'])} | "
        f"{_fmt_mb(mem['peak'])} | {r['compile_s']:.1f} |"
      )
    lines.append("")
  lines += ["## Targets", "", "| target | workload | measured | met |", "|---|---|---:|:---:|"]
  for t in results["targets"]:
    lines.append(
      f"| {t['target']} | {t['workload']} | {t['value']:.3f} | {'yes' if t['met'] else 'no'} |"
    )
  lines.append("")
  return "\n".join(lines)


#: ``--check``: relative tolerance on XLA's temp allocation on another machine.
CHECK_MEMORY_RTOL = 0.1


def check(
  recorded: dict[str, Any], *, quick: bool = False, progress: bool = True
) -> list[_report.Check]:
  """Recompiles the steps of ``recorded`` and compares XLA's temp allocation of each.

  Step times depend on the machine and its load and are not checked. ``quick``: the first
  three rows of the smallest workload.
  """
  del progress
  known = {w.name: w for config in (DEFAULT, QUICK) for w in config.workloads}
  seed = recorded.get("config", {}).get("seed", 0)
  workloads = recorded["workloads"]
  if quick:
    workloads = [min(workloads, key=lambda w: w["num_params"])]
  checks = []
  for w in workloads:
    if w["name"] not in known:
      raise ValueError(
        f"Unknown workload {w['name']!r}; regenerate with python -m benchmarks.cost."
      )
    workload = known[w["name"]]
    methods = {m.name: m for m in workload.methods}
    rows = [r for r in w["rows"] if r["name"] in methods and r["memory"]["temp"] is not None]
    model = build_model(workload)
    key_init, key_x, key_y = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(key_x, (workload.batch, *workload.input_shape))
    y = jax.random.randint(key_y, (workload.batch,), 0, 10)
    variables = jax.jit(lambda k, model=model, x=x: model.init(k, x[:1], train=False))(key_init)
    params, batch_stats = variables["params"], variables["batch_stats"]
    for row in rows[:3] if quick else rows:
      method = methods[row["name"]]
      step, tx = model_step(method, make_loss(model), seed)
      args = [params, tx.init(params), batch_stats, x, y]
      donate = () if method.kind == "draws" else (0, 2)
      compiled = jax.jit(step, donate_argnums=donate).lower(*args).compile()
      temp = memory(compiled)["temp"]
      checks.append(
        _report.Check(
          f"{w['name']}, {row['name']}: XLA temp bytes",
          row["memory"]["temp"],
          float("nan") if temp is None else temp,
          rtol=CHECK_MEMORY_RTOL,
        )
      )
  return checks


def toolbox_main(argv: Sequence[str]) -> dict[str, Any]:
  """``python -m benchmarks.cost --toolbox [--quick] [--out DIR] [--no-progress]``: writes
  ``cost_toolbox.json`` and ``cost_toolbox.md``."""
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks.cost --toolbox",
    description="Step cost of fSGHMC, RWP-AdamW and SAM-AdamW against their base optimizers.",
  )
  parser.add_argument("--quick", action="store_true", help="a small smoke run")
  parser.add_argument("--out", type=Path, default=_report.RESULTS_DIR, help="output folder")
  parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
  args = parser.parse_args(argv)
  results = run(TOOLBOX_QUICK if args.quick else TOOLBOX, progress=not args.no_progress)
  results["quick"] = args.quick
  command = "python -m benchmarks.cost --toolbox" + (" --quick" if args.quick else "")
  paths = _report.write(
    results, args.out, "cost_toolbox", markdown_toolbox, module="benchmarks.cost", command=command
  )
  print(markdown_toolbox(results))
  print("wrote", ", ".join(str(x) for x in paths))
  return results


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """``python -m benchmarks.cost [--toolbox] [--quick] [--out DIR] [--no-progress]``."""
  args = list(sys.argv[1:] if argv is None else argv)
  if "--toolbox" in args:
    args.remove("--toolbox")
    return toolbox_main(args)
  return _report.main(args, sys.modules[__name__])


if __name__ == "__main__":
  main()
