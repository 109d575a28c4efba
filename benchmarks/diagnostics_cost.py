"""Cost of the curvature diagnostics relative to one gradient evaluation.

What is measured (``python -m benchmarks.diagnostics_cost``; ``--quick`` for a smoke run):

* A ReLU MLP 64-128-128-10 (26,122 parameters) with softmax cross-entropy on the
  scikit-learn digits (1,797 standardised 8x8 images, 10 classes; random data of that shape if
  scikit-learn is missing), evaluated full-batch.
* The baseline is one gradient, ``jax.jit(jax.grad(loss))``. Against it: one Hessian-vector
  product (:func:`fsgld_optax.diagnostics.hvp`), a Hutchinson trace estimate with 16
  Rademacher probes (one at a time, and all 16 vectorised), the top-5 eigenvalues with 32 and
  64 Lanczos steps, and a spectral density with 8 probes of 32 Lanczos steps.
* Every function is compiled once (compile time reported separately), then timed with
  ``jax.block_until_ready`` over several rounds, each round calling every function once (so
  load changes on a shared machine hit all of them alike); the table reports the median and
  the minimum, and their ratios to the gradient's median and minimum from the same process.

Writes ``diagnostics_cost.json`` and ``diagnostics_cost.md`` to the output folder.
``--check`` reruns the benchmark once (one timed repeat) and compares its deterministic
numbers, the trace estimate and the top eigenvalues at initialisation, with a results file:
bitwise on its machine, within a relative 1e-4 elsewhere (float32 Hessian-vector products);
the timings are not checked.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from benchmarks import _report
from fsgld_optax import diagnostics

__all__ = ["QUICK", "Config", "check", "main", "run"]


@dataclasses.dataclass(frozen=True)
class Config:
  """Benchmark size."""

  hidden: tuple[int, ...] = (128, 128)
  num_examples: int | None = None  # None: the whole digits dataset (1,797 images).
  repeats: int = 15  # timed repeats per function (after one compile-and-run)
  hutchinson_probes: int = 16
  top_k: int = 5
  lanczos_steps: tuple[int, ...] = (32, 64)
  density_probes: int = 8
  density_order: int = 32
  seed: int = 0


DEFAULT = Config()
QUICK = Config(num_examples=256, repeats=3, lanczos_steps=(16,), density_probes=2)


def load_digits(num_examples: int | None, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
  """The scikit-learn digits, standardised per pixel; random data of that shape without it."""
  try:
    from sklearn.datasets import load_digits as sklearn_digits

    images, labels = sklearn_digits(return_X_y=True)
    x, y = np.asarray(images, np.float32), np.asarray(labels, np.int32)
    source = "sklearn digits"
  except ImportError:  # pragma: no cover - scikit-learn is in the bench extra
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1797, 64)).astype(np.float32)
    y = rng.integers(0, 10, size=1797).astype(np.int32)
    source = "random data of digits shape"
  x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
  if num_examples is not None:
    x, y = x[:num_examples], y[:num_examples]
  return x, y, source


def init_mlp(rng: np.random.Generator, sizes: Sequence[int]) -> list[dict[str, jax.Array]]:
  """He-initialised dense layers."""
  layers = []
  for fan_in, fan_out in itertools.pairwise(sizes):
    w = rng.normal(size=(fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
    layers.append({"w": jnp.asarray(w, jnp.float32), "b": jnp.zeros(fan_out, jnp.float32)})
  return layers


def mlp_loss(params: list[dict[str, jax.Array]], x: jax.Array, y: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy of a ReLU MLP."""
  h = x
  for layer in params[:-1]:
    h = jax.nn.relu(h @ layer["w"] + layer["b"][None])
  logits = h @ params[-1]["w"] + params[-1]["b"][None]
  log_probs = jax.nn.log_softmax(logits)
  return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))


def wall_time(fn: Callable[[], Any]) -> float:
  """Wall time of one call, including ``jax.block_until_ready`` on its outputs."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def run(config: Config, *, progress: bool = True) -> dict[str, Any]:
  """Times every diagnostic; returns the JSON-ready results."""
  x_np, y_np, source = load_digits(config.num_examples, config.seed)
  x, y = jnp.asarray(x_np), jnp.asarray(y_np)
  sizes = (x.shape[1], *config.hidden, 10)
  params = init_mlp(np.random.default_rng(config.seed), sizes)
  num_params = sum(leaf.size for leaf in jax.tree.leaves(params))
  loss = functools.partial(mlp_loss, x=x, y=y)
  key = jax.random.key(config.seed)
  v = jax.tree.map(jnp.ones_like, params)

  grad = jax.jit(jax.grad(loss))
  hvp = jax.jit(functools.partial(diagnostics.hvp, loss))
  hutchinson = jax.jit(
    functools.partial(diagnostics.hutchinson_trace, loss, num_samples=config.hutchinson_probes)
  )
  hutchinson_vectorised = jax.jit(
    functools.partial(
      diagnostics.hutchinson_trace,
      loss,
      num_samples=config.hutchinson_probes,
      map_batch_size=config.hutchinson_probes,
    )
  )
  density = jax.jit(
    functools.partial(
      diagnostics.spectral_density,
      loss,
      num_probes=config.density_probes,
      lanczos_order=config.density_order,
    )
  )
  p = config.hutchinson_probes
  cases: list[tuple[str, int, Callable[[], Any]]] = [
    ("gradient", 0, lambda: grad(params)),
    ("Hessian-vector product", 1, lambda: hvp(params, v)),
    (f"Hutchinson trace, {p} probes", p, lambda: hutchinson(params, key)),
    (f"Hutchinson trace, {p} probes vectorised", p, lambda: hutchinson_vectorised(params, key)),
  ]
  top_fns = {}
  for steps in config.lanczos_steps:
    top = jax.jit(
      functools.partial(diagnostics.top_eigenvalues, loss, k=config.top_k, num_iterations=steps)
    )
    top_fns[steps] = top
    cases.append(
      (
        f"top-{config.top_k} eigenvalues, {steps} Lanczos steps",
        steps,
        lambda t=top: t(params, key),
      )
    )
  cases.append(
    (
      f"spectral density, {config.density_probes} probes x {config.density_order} steps",
      config.density_probes * config.density_order,
      lambda: density(params, key),
    )
  )

  # The first call compiles. The timed repeats are interleaved (one call of every function per
  # round), so that load changes on a shared machine affect all functions alike.
  first = [wall_time(fn) for _, _, fn in cases]
  times: list[list[float]] = [[] for _ in cases]
  for _ in tqdm(range(config.repeats), desc="diagnostics_cost", disable=not progress):
    for i, (_, _, fn) in enumerate(cases):
      times[i].append(wall_time(fn))
  rows = [
    {
      "name": name,
      "hessian_vector_products": num_hvps,
      "compile_and_first_run_s": first[i],
      "median_s": statistics.median(times[i]),
      "min_s": min(times[i]),
      "times_s": times[i],
    }
    for i, (name, num_hvps, _) in enumerate(cases)
  ]
  gradient_time = rows[0]["median_s"]
  hvp_time = rows[1]["median_s"]
  for row in rows:
    row["ratio_to_gradient"] = row["median_s"] / gradient_time
    row["min_ratio_to_gradient"] = row["min_s"] / rows[0]["min_s"]
    row["ratio_per_hvp_to_hvp"] = (
      row["median_s"] / (row["hessian_vector_products"] * hvp_time)
      if row["hessian_vector_products"]
      else None
    )

  # A sanity check that the timed functions compute something sensible.
  trace = hutchinson(params, key)
  top = top_fns[max(top_fns)](params, key)
  return {
    "config": dataclasses.asdict(config),
    "data": {"source": source, "num_examples": int(x.shape[0]), "input_dim": int(x.shape[1])},
    "model": {"layer_sizes": list(sizes), "num_params": int(num_params)},
    "results": rows,
    "estimates": {
      "trace": float(trace.trace),
      "trace_stderr": float(trace.stderr),
      "top_eigenvalues": [float(e) for e in top.eigenvalues],
      "top_residual_norms": [float(r) for r in top.residual_norms],
    },
    "environment": _report.environment(),
  }


def markdown(results: dict[str, Any]) -> str:
  """The Markdown report of :func:`run`'s results."""
  model, data, env = results["model"], results["data"], results["environment"]
  est = results["estimates"]
  lines = [
    "# Cost of the curvature diagnostics",
    "",
    f"MLP {'-'.join(map(str, model['layer_sizes']))} ({model['num_params']:,} parameters), "
    f"full batch of {data['num_examples']:,} examples ({data['source']}); "
    f"JAX {env['jax']} on {env['backend']} ({env['device']}, {env['cpu_count']} CPUs, "
    f"1-minute load average {env['load_average_1min']:.1f} at the end of the run). "
    f"Median and minimum of {results['config']['repeats']} interleaved repeats after "
    "compilation; ratios against the gradient's median (minimum) from the same process.",
    "",
    "| computation | HVPs | median (ms) | × gradient | min (ms) | × gradient (min) "
    "| time per HVP / one HVP | compile + first run (s) |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for row in results["results"]:
    per_hvp = row["ratio_per_hvp_to_hvp"]
    lines.append(
      f"| {row['name']} | {row['hessian_vector_products']} | {1e3 * row['median_s']:.2f} | "
      f"{row['ratio_to_gradient']:.1f} | {1e3 * row['min_s']:.2f} | "
      f"{row['min_ratio_to_gradient']:.1f} | {'–' if per_hvp is None else f'{per_hvp:.2f}'} | "
      f"{row['compile_and_first_run_s']:.2f} |"
    )
  eigs = ", ".join(f"{e:.4g}" for e in est["top_eigenvalues"])
  lines += [
    "",
    f"At initialisation: trace ≈ {est['trace']:.4g} ± {est['trace_stderr']:.2g} (standard "
    f"error), top eigenvalues {eigs} (largest Lanczos residual "
    f"{max(est['top_residual_norms']):.1e}).",
    "",
    "A Hessian-vector product is forward-over-reverse differentiation of the loss. Without "
    "data chunks the gradient is linearised once per call, so each further product only "
    "re-runs the tangent computation (hence a time per HVP below one stand-alone HVP); "
    "Lanczos adds full reorthogonalisation against all previous steps. Vectorising the probes "
    "(`map_batch_size`) trades memory for parallelism; compare both on the target device.",
    "",
  ]
  return "\n".join(lines)


def check(
  recorded: dict[str, Any], *, quick: bool = False, progress: bool = True
) -> list[_report.Check]:
  """Reruns once and compares the trace estimate and the top eigenvalues with ``recorded``."""
  del quick
  config = _report.config_from_json(Config, recorded["config"])
  rerun = run(dataclasses.replace(config, repeats=1), progress=progress)["estimates"]
  est = recorded["estimates"]
  return [
    _report.Check("Hutchinson trace", est["trace"], rerun["trace"], rtol=1e-4),
    _report.Check("its standard error", est["trace_stderr"], rerun["trace_stderr"], rtol=1e-3),
    _report.Check("top eigenvalues", est["top_eigenvalues"], rerun["top_eigenvalues"], rtol=1e-4),
  ]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """``python -m benchmarks.diagnostics_cost [--quick] [--check] [--out DIR] [--no-progress]``."""
  return _report.main(argv, sys.modules[__name__])


if __name__ == "__main__":
  main()
