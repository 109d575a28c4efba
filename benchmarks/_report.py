"""What the benchmark scripts share: their command line, the record of the machine they ran on,
and writing their results as JSON, Markdown and (where there is a figure) PNG."""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import optax

RESULTS_DIR = Path(__file__).parent / "results"


def environment() -> dict[str, Any]:
  """Library versions, backend, device and CPU count, and the current 1-minute load average."""
  return {
    "jax": jax.__version__,
    "optax": optax.__version__,
    "backend": jax.default_backend(),
    "device": jax.devices()[0].device_kind,
    "cpu_count": os.cpu_count(),
    "load_average_1min": os.getloadavg()[0],
    "python": platform.python_version(),
    "machine": platform.machine(),
    "platform": platform.platform(),
  }


def write(
  results: dict[str, Any],
  out_dir: Path,
  name: str,
  markdown: Callable[[dict[str, Any]], str],
  plot: Callable[[dict[str, Any], Path], None] | None = None,
) -> list[Path]:
  """Writes ``name.json``, ``name.md`` and, given ``plot``, ``name.png``; returns their paths."""
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = [out_dir / f"{name}.json", out_dir / f"{name}.md"]
  paths[0].write_text(json.dumps(results, indent=1) + "\n")
  paths[1].write_text(markdown(results))
  if plot is not None:
    paths.append(out_dir / f"{name}.png")
    plot(results, paths[2])
  return paths


def main(argv: Sequence[str] | None, benchmark: ModuleType) -> dict[str, Any]:
  """The command line ``python -m benchmarks.<name> [--quick] [--out DIR] [--no-progress]``.

  ``benchmark`` is the benchmark's module: its docstring describes it, and it defines
  ``run(config, *, progress)``, the configurations ``DEFAULT`` and ``QUICK`` (with
  ``--quick``), ``markdown(results)`` and, if it draws a figure, ``plot(results, path)``.
  Records whether the run was quick, writes the results with :func:`write`, prints the
  Markdown report and the paths written, and returns the results.
  """
  # Run as ``python -m benchmarks.<name>`` the module is ``__main__``; its spec keeps the name.
  spec = getattr(benchmark, "__spec__", None)
  name = (spec.name if spec is not None else benchmark.__name__).rsplit(".", 1)[-1]
  parser = argparse.ArgumentParser(
    prog=f"python -m benchmarks.{name}", description=(benchmark.__doc__ or "").split("\n")[0]
  )
  parser.add_argument("--quick", action="store_true", help="a small smoke run")
  parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="output folder")
  parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
  args = parser.parse_args(argv)
  config = benchmark.QUICK if args.quick else benchmark.DEFAULT
  results = benchmark.run(config, progress=not args.no_progress)
  results["quick"] = args.quick
  plot = getattr(benchmark, "plot", None)
  paths = write(results, args.out, name, benchmark.markdown, plot)
  print(benchmark.markdown(results))
  print("wrote", ", ".join(str(x) for x in paths))
  return results
