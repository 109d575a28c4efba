"""Accelerator benchmark: step-time ratios, random-number throughput and the memory of n = 8.

``bash benchmarks/gpu.sh`` (which runs ``python -m benchmarks.gpu``) records on whatever
accelerator JAX finds (GPU, TPU, else CPU):

* **Step-time ratios** on ResNet-18 and ResNet-34 (:mod:`benchmarks.models`, CIFAR shapes,
  BatchNorm in training mode) at batch 128, each method against its base optimizer in the same
  process (medians of interleaved rounds, :func:`benchmarks.cost.run_workload`): fSGLD
  (n = 1, Gaussian and cheap randomness) against SGD, fSGHMC against SGD with the same
  momentum, RWP-AdamW (isotropic and filter-wise σ) and SAM-AdamW against AdamW, and SAM
  against SGD.
* **Memory of n = 8**: the compiled step's temporary memory (XLA's ``memory_analysis()``) with
  n = 8 perturbations and ``split_batch``, evaluated one at a time
  (``perturbation_batch_size=1``) and all at once, against n = 1, with the compile times.
* **Random-number throughput** of the key implementations (``threefry2x32``, ``rbg``,
  ``unsafe_rbg``): standard normal and Rademacher draws with ``jax.random`` and with the draws
  fSGLD uses, in numbers per second over a large array.

``--quick`` runs a tiny CNN and small draws in seconds on a CPU (the test suite runs it).
Writes ``gpu_<device>.json`` and ``.md`` to ``benchmarks/results/gpu/`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from benchmarks import _report, cost
from fsgld_optax import _randomness

__all__ = ["FULL", "QUICK", "Plan", "main", "markdown", "rng_throughput", "run", "samplers"]

#: Key implementations whose throughput is measured.
KEY_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")


def gpu_methods(*, quick: bool) -> tuple[cost.Method, ...]:
  """The timed rows: each method with its base optimizer, then the n = 8 memory rows."""
  rows = [
    cost.Method("SGD", "sgd"),
    cost.fsgld_method(1, False, False),
    cost.Method("SGD-M", "sgd_momentum"),
    cost.Method("fSGHMC (default)", "fsghmc", baseline="SGD-M"),
    cost.Method("AdamW", "adamw"),
    cost.Method("RWP-AdamW", "rwp_adamw", baseline="AdamW"),
    cost.Method("SAM", "sam"),
  ]
  if quick:
    return (*rows, dataclasses.replace(cost.fsgld_method(2, True, False), timed=False))
  return (
    *rows,
    cost.fsgld_method(1, False, True),
    cost.Method("fSGHMC (cheap)", "fsghmc", cheap=True, baseline="SGD-M"),
    cost.Method("RWP-AdamW (filter)", "rwp_adamw", baseline="AdamW", scale="filter"),
    cost.Method("SAM-AdamW", "sam_adamw", baseline="AdamW"),
    cost.fsgld_method(8, True, False),
    cost.fsgld_method(8, True, False, group=None),
  )


@dataclasses.dataclass(frozen=True)
class Plan:
  """What to run.

  Attributes:
    workloads: the model workloads (:class:`benchmarks.cost.Workload`).
    rng_size: numbers per draw in the throughput measurement.
    rng_repeats: timed draws per (implementation, sampler).
    seed: seed of the inputs, parameters and keys.
  """

  workloads: tuple[cost.Workload, ...]
  rng_size: int
  rng_repeats: int
  seed: int = 0


def _resnet(name: str, model: str) -> cost.Workload:
  return cost.Workload(
    f"{name}, batch 128", model, (), (32, 32, 3), 128, gpu_methods(quick=False), 20, 5
  )


FULL = Plan(
  workloads=(_resnet("ResNet-18", "resnet18"), _resnet("ResNet-34", "resnet34")),
  rng_size=2**26,
  rng_repeats=20,
)
QUICK = Plan(
  workloads=(
    cost.Workload(
      "MNIST-1D CNN (one 8-channel block), batch 16",
      "cnn1d",
      (("features", (8,)),),
      (40, 1),
      16,
      gpu_methods(quick=True),
      repeats=2,
      inner=2,
    ),
  ),
  rng_size=2**12,
  rng_repeats=3,
)


def samplers() -> dict[str, Callable[[jax.Array, jax.Array], jax.Array]]:
  """``sampler(key, like) -> draws`` of the measured kinds."""
  return {
    "jax.random.normal": lambda k, x: jax.random.normal(k, x.shape, x.dtype),
    "jax.random.rademacher": lambda k, x: jax.random.rademacher(k, x.shape, x.dtype),
    "fSGLD gaussian": lambda k, x: _randomness.standard_noise_like(k, x, "gaussian"),
    "fSGLD rademacher": lambda k, x: _randomness.standard_noise_like(k, x, "rademacher"),
  }


def rng_throughput(size: int, repeats: int, seed: int, bar: Any = None) -> list[dict[str, Any]]:
  """Numbers per second of every (key implementation, sampler) over a float32 array of ``size``.

  Each draw is jitted and compiled first, then timed ``repeats`` times with
  ``jax.block_until_ready`` in interleaved rounds; the median is reported.

  Examples:
    >>> rows = rng_throughput(64, 1, 0)
    >>> sorted({r["impl"] for r in rows}) == sorted(KEY_IMPLS)
    True
  """
  like = jnp.zeros((size,), jnp.float32)
  runners: dict[tuple[str, str], Callable[..., None]] = {}
  for impl in KEY_IMPLS:
    key = jax.random.key(seed, impl=impl)
    for name, sampler in samplers().items():
      compiled = jax.jit(sampler).lower(key, like).compile()

      def runner(compiled: Any = compiled, key: jax.Array = key) -> None:
        jax.block_until_ready(compiled(key, like))

      runner()  # warm-up
      runners[impl, name] = runner
  times: dict[tuple[str, str], list[float]] = {k: [] for k in runners}
  for _ in range(repeats):
    for k, runner in runners.items():
      start = time.perf_counter()
      runner()
      times[k].append(time.perf_counter() - start)
    if bar is not None:
      bar.update(1)
  return [
    {
      "impl": impl,
      "sampler": name,
      "size": size,
      "median_s": statistics.median(ts),
      "numbers_per_s": size / statistics.median(ts),
    }
    for (impl, name), ts in times.items()
  ]


def device_slug() -> str:
  """A file-name-safe name of the first device, e.g. ``nvidia_h200`` or ``cpu``."""
  device = jax.devices()[0]
  kind = getattr(device, "device_kind", device.platform) or device.platform
  return re.sub(r"[^a-z0-9]+", "_", str(kind).lower()).strip("_") or device.platform


def run(plan: Plan, *, progress: bool = True) -> dict[str, Any]:
  """Runs the workloads and the throughput measurement; JSON-ready results."""
  units = sum(
    len(w.methods) + sum(m.timed for m in w.methods) * (1 + w.repeats) for w in plan.workloads
  )
  start, load = time.perf_counter(), os.getloadavg()[0]
  with tqdm(total=units + plan.rng_repeats, desc="gpu", disable=not progress) as bar:
    workloads = [cost.run_workload(w, plan.seed, bar) for w in plan.workloads]
    bar.set_postfix_str("random numbers")
    rng = rng_throughput(plan.rng_size, plan.rng_repeats, plan.seed, bar)
  device = jax.devices()[0]
  results = {
    "config": {"seed": plan.seed, "rng_size": plan.rng_size},
    "device": {
      "platform": device.platform,
      "kind": getattr(device, "device_kind", device.platform),
      "count": jax.device_count(),
    },
    "workloads": workloads,
    "rng": rng,
    "environment": {**_report.environment(), "load_average_1min_start": load},
    "wall_time_s": time.perf_counter() - start,
  }
  results["targets"] = cost.toolbox_targets(results)
  return results


def markdown(results: dict[str, Any]) -> str:
  """The Markdown report: the cost tables, then the random-number throughput."""
  d = results["device"]
  text = cost.markdown_toolbox(results).replace(
    "# Step cost of the flatness toolbox",
    f"# Accelerator benchmark: {d['kind']} ({d['platform']}, {d['count']} device(s))",
    1,
  )
  lines = [
    text.rstrip("\n"),
    "",
    "## Random-number throughput",
    "",
    f"{results['config']['rng_size']:,} float32 numbers per draw; median over interleaved "
    "rounds; 10⁹ numbers per second.",
    "",
    "| key implementation | "
    + " | ".join(dict.fromkeys(r["sampler"] for r in results["rng"]))
    + " |",
    "|---|" + "---:|" * len(dict.fromkeys(r["sampler"] for r in results["rng"])),
  ]
  for impl in dict.fromkeys(r["impl"] for r in results["rng"]):
    cells = [f"{r['numbers_per_s'] / 1e9:.2f}" for r in results["rng"] if r["impl"] == impl]
    lines.append(f"| {impl} | " + " | ".join(cells) + " |")
  lines.append("")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """``python -m benchmarks.gpu [--quick] [--out DIR] [--no-progress]``."""
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks.gpu", description=(__doc__ or "").split("\n")[0]
  )
  parser.add_argument("--quick", action="store_true", help="a tiny run (seconds on a CPU)")
  parser.add_argument("--out", type=Path, default=_report.RESULTS_DIR / "gpu", help="output folder")
  parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
  args = parser.parse_args(argv)
  results = run(QUICK if args.quick else FULL, progress=not args.no_progress)
  results["quick"] = args.quick
  name = "gpu_" + device_slug() + ("_quick" if args.quick else "")
  command = "bash benchmarks/gpu.sh" + (" --quick" if args.quick else "")
  paths = _report.write(results, args.out, name, markdown, module="benchmarks.gpu", command=command)
  print(markdown(results))
  print("wrote", ", ".join(str(p) for p in paths))
  return results


if __name__ == "__main__":
  main()
