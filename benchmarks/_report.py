"""What the benchmark scripts share: their command line, the provenance of every result, the
check of a committed result against a rerun, and writing results as JSON, Markdown and PNG.

**Provenance.** Every results file written by :func:`write` carries a ``provenance`` record in
its JSON and the same facts in a footer of its Markdown (:func:`provenance`): the command that
regenerates it, the git commit and whether the working tree (and, separately, the result's
own sources) differed from it, a hash of the source files that produce the result, the
library versions, the CPU model and its vector extensions, the thread count, ``XLA_FLAGS``,
the seeds and the wall time.

**Sources of a result** (:func:`source_files`): the benchmark module, every module of the
``benchmarks`` package that it imports, directly or through another such module (found by
reading the ``import`` statements, so the set does not depend on what a process happened to
import), and every Python file of the ``fsgld_optax`` package. This module is left out: it
formats and records, and no number of a result comes from it. A benchmark may name further
files (paths relative to the repository root) in a module-level ``EXTRA_SOURCES`` tuple. The
source hash is SHA-256 over the sorted lines ``path NUL sha256(file bytes)``; the record
also keeps every file's own hash, so a stale result says which files changed.

**Staleness** (:func:`status`, ``python -m benchmarks._report``): a committed results file is
*fresh* when the hash of its sources, recomputed from the current files, equals the recorded
one; otherwise it is *stale*, and acceptable only with a dated note in the JSON,
``"stale_note": {"date": "YYYY-MM-DD", "reason": "..."}``, that says why it was not rerun.
``tests/test_provenance.py`` enforces this for every committed file under
``benchmarks/results/``.

**Check** (``python -m benchmarks.<name> --check``): the benchmark reruns a reduced,
deterministic subset of a results file (by default the committed one; ``--out DIR`` reads
``DIR/<name>.json``; ``--quick`` a smaller subset, as the test suite runs it) and compares
every rerun number with the recorded one (:class:`Check`). If the rerun happens on the same
machine as the recorded run (same :func:`machine_fingerprint`: CPU model and vector
extensions, thread count, ``XLA_FLAGS``, jax and jaxlib versions), the numbers must agree
**bitwise**: XLA:CPU compiles the same program to the same
code there, and nothing in these benchmarks depends on thread timing. Elsewhere each number
must agree within the tolerance its benchmark states for another CPU, where XLA generates
different vector code (different rounding in reductions and in the approximations of
``exp``, ``log`` and ``tanh``).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, TypeVar

import jax
import numpy as np
import optax

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).parent / "results"

#: Modules of ``benchmarks`` that never count among the sources of a result.
EXCLUDED_MODULES = ("benchmarks._report",)
#: The package whose every Python file is a source of every result.
PACKAGE = "fsgld_optax"
#: Distributions whose versions are recorded.
LIBRARIES = ("jax", "jaxlib", "optax", "flax", "numpy", "scipy", "scikit-learn", "mnist1d")
#: Tolerances of a check that retrains the first epochs of a network, on another machine:
#: relative, on the mean training loss of each epoch, and absolute, on an accuracy after each
#: epoch (what moves between machines is measured in the benchmarks README).
TRAINING_LOSS_RTOL = 2e-3
TRAINING_ACC_ATOL = 0.02
#: CPU flags that decide which vector instructions XLA:CPU may generate.
_ISA_FLAGS = re.compile(r"^(sse4_[12]|avx.*|fma|f16c|amx.*)$")


# --------------------------------------------------------------------------------------
# Machine and software
# --------------------------------------------------------------------------------------


def cpu_info() -> dict[str, Any]:
  """CPU model and the vector extensions XLA can use, from ``/proc/cpuinfo`` where present."""
  model, flags = platform.processor() or platform.machine(), []
  try:
    text = Path("/proc/cpuinfo").read_text()
  except OSError:
    text = ""
  for line in text.splitlines():
    key, _, value = line.partition(":")
    key = key.strip()
    if key == "model name" and value.strip():
      model = value.strip()
    elif key in ("flags", "Features") and not flags:
      flags = value.split()
  try:
    threads = len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    threads = os.cpu_count() or 0
  return {
    "cpu_model": model,
    "cpu_isa": sorted(f for f in flags if _ISA_FLAGS.match(f)),
    "cpu_threads": threads,
  }


def library_versions() -> dict[str, str | None]:
  """Installed versions of :data:`LIBRARIES` (``None`` where one is not installed)."""
  versions: dict[str, str | None] = {}
  for name in LIBRARIES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return versions


def environment() -> dict[str, Any]:
  """Library versions, backend, device, CPU model, threads, ``XLA_FLAGS`` and the load."""
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
    **cpu_info(),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "libraries": library_versions(),
  }


def machine_fingerprint(env: dict[str, Any]) -> str:
  """A hash of what decides the bits of an XLA:CPU result on a machine.

  CPU model and vector extensions, thread count, ``XLA_FLAGS`` (all of them: even
  ``--xla_force_host_platform_device_count``, which splits the CPU among devices, changes the
  bits of a convolutional network's training), backend, and the jax and jaxlib versions. Two
  runs with the same fingerprint and the same sources give the same bits.

  Args:
    env: an :func:`environment` record.

  Returns:
    ``"sha256:<hex>"``.
  """
  libraries = env.get("libraries") or {}
  fields = {
    "backend": env.get("backend"),
    "cpu_model": env.get("cpu_model"),
    "cpu_isa": env.get("cpu_isa"),
    "cpu_threads": env.get("cpu_threads"),
    "xla_flags": sorted(env.get("xla_flags", "").split()),
    "jax": env.get("jax"),
    "jaxlib": libraries.get("jaxlib"),
  }
  return "sha256:" + hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------------------
# Sources and provenance
# --------------------------------------------------------------------------------------


def _module_path(name: str, root: Path) -> Path | None:
  base = root.joinpath(*name.split("."))
  for path in (base.with_suffix(".py"), base / "__init__.py"):
    if path.is_file():
      return path
  return None


def _imported_benchmark_modules(path: Path) -> set[str]:
  """Names of ``benchmarks`` modules that the file at ``path`` imports."""
  names: set[str] = set()
  for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names.add(node.module)
      # ``from benchmarks import data`` names a module; ``from benchmarks.x import f`` does not.
      names.update(f"{node.module}.{alias.name}" for alias in node.names)
  return {n for n in names if n == "benchmarks" or n.startswith("benchmarks.")}


def source_files(module: str, *, root: Path = REPO_ROOT) -> list[str]:
  """The files that produce the results of benchmark ``module`` (see the module docstring).

  Args:
    module: a module name, e.g. ``"benchmarks.noisy_labels"``.
    root: the repository root.

  Returns:
    Sorted paths relative to ``root``, with ``/`` separators.

  Raises:
    ValueError: if ``module`` is not a file under ``root``.
  """
  if _module_path(module, root) is None:
    raise ValueError(f"module {module!r} is not a file under {root}.")
  seen: set[str] = set()
  files: set[Path] = set()
  stack = [module]
  while stack:
    name = stack.pop()
    if name in seen or name in EXCLUDED_MODULES:
      continue
    seen.add(name)
    path = _module_path(name, root)
    if path is None:  # a name imported from a module, not a module
      continue
    if path.name != "__init__.py" or path.stat().st_size:
      files.add(path)
    stack.extend(_imported_benchmark_modules(path))
    if name == module:
      extra = _module_extra_sources(path)
      files.update(root / p for p in extra)
  package = root / PACKAGE
  files.update(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)
  return sorted(p.relative_to(root).as_posix() for p in files)


def _module_extra_sources(path: Path) -> tuple[str, ...]:
  """The literal ``EXTRA_SOURCES = (...)`` tuple of a module file, read without importing it."""
  for node in ast.parse(path.read_text()).body:
    if isinstance(node, ast.Assign | ast.AnnAssign):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      if any(isinstance(t, ast.Name) and t.id == "EXTRA_SOURCES" for t in targets):
        value = ast.literal_eval(node.value) if node.value is not None else ()
        return tuple(str(v) for v in value)
  return ()


def file_hashes(files: Iterable[str], *, root: Path = REPO_ROOT) -> dict[str, str]:
  """SHA-256 of every file's bytes, keyed by its path relative to ``root``."""
  return {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in sorted(files)}


def combined_hash(hashes: dict[str, str]) -> str:
  """``"sha256:<hex>"`` over the sorted lines ``path NUL file hash``."""
  text = "".join(f"{path}\0{digest}\n" for path, digest in sorted(hashes.items()))
  return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _git(args: Sequence[str], root: Path) -> str | None:
  try:
    result = subprocess.run(
      ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=False
    )
  except (OSError, subprocess.SubprocessError):
    return None
  return result.stdout if result.returncode == 0 else None


def git_state(files: Sequence[str], *, root: Path = REPO_ROOT) -> dict[str, Any]:
  """The commit, and whether the tree and the given files differ from it (``None``: no git)."""
  commit = _git(["rev-parse", "HEAD"], root)
  if commit is None:
    return {"commit": None, "dirty": None, "sources_dirty": None}
  tree = _git(["status", "--porcelain", "--untracked-files=no"], root)
  sources = _git(["status", "--porcelain", "--untracked-files=all", "--", *files], root)
  return {
    "commit": commit.strip(),
    "dirty": None if tree is None else bool(tree.strip()),
    "sources_dirty": None if sources is None else bool(sources.strip()),
  }


def provenance(
  module: str,
  *,
  command: str,
  seeds: dict[str, Any] | None = None,
  wall_time_s: float | None = None,
  root: Path = REPO_ROOT,
) -> dict[str, Any]:
  """The provenance record of a result of benchmark ``module``.

  Args:
    module: the benchmark's module name, e.g. ``"benchmarks.noisy_labels"``.
    command: the command that regenerates the result.
    seeds: the seeds of the run, by name.
    wall_time_s: the wall time of the run.
    root: the repository root.

  Returns:
    A JSON-ready dict: ``module``, ``command``, ``date`` (UTC), ``git``, ``source_hash``,
    ``source_files`` (path to SHA-256), ``environment``, ``machine_fingerprint``, ``seeds``,
    ``wall_time_s``.
  """
  files = source_files(module, root=root)
  hashes = file_hashes(files, root=root)
  env = environment()
  return {
    "module": module,
    "command": command,
    "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "git": git_state(files, root=root),
    "source_hash": combined_hash(hashes),
    "source_files": hashes,
    "environment": env,
    "machine_fingerprint": machine_fingerprint(env),
    "seeds": seeds or {},
    "wall_time_s": wall_time_s,
  }


def seeds_of(config: Any) -> dict[str, Any]:
  """The fields of a configuration (dataclass or dict) whose name contains ``seed``."""
  if dataclasses.is_dataclass(config) and not isinstance(config, type):
    config = dataclasses.asdict(config)
  if not isinstance(config, dict):
    return {}
  return {k: v for k, v in config.items() if "seed" in k}


_Config = TypeVar("_Config")


def config_from_json(cls: Callable[..., _Config], values: dict[str, Any]) -> _Config:
  """A flat configuration dataclass from its ``dataclasses.asdict`` (lists back to tuples)."""
  kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
  return cls(**kwargs)


def markdown_footer(record: dict[str, Any]) -> str:
  """The provenance of a result as a Markdown paragraph (the footer :func:`write` appends)."""
  git, env = record["git"], record["environment"]
  commit = git.get("commit")
  if commit is None:
    where = "outside a git checkout"
  else:
    state = "with uncommitted changes to its sources" if git.get("sources_dirty") else "clean"
    where = f"commit {commit[:12]} ({state})"
  libraries = ", ".join(f"{k} {v}" for k, v in env.get("libraries", {}).items() if v)
  seeds = ", ".join(f"{k} {v}" for k, v in record.get("seeds", {}).items()) or "none"
  wall = record.get("wall_time_s")
  flags = env.get("xla_flags") or "(none)"
  return (
    f"*Provenance:* `{record['command']}` at {where}, {record['date']}; source hash "
    f"`{record['source_hash'][:19]}` over {len(record['source_files'])} files; "
    f"{env.get('cpu_model')} ({env.get('cpu_threads')} threads), XLA_FLAGS {flags}; "
    f"{libraries}; seeds: {seeds}"
    + ("" if wall is None else f"; wall time {wall:.0f} s")
    + ". Details in the JSON file's `provenance`.\n"
  )


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def _scalar(value: Any) -> str:
  if isinstance(value, np.generic):
    value = value.item()
  return json.dumps(value)


def dumps(value: Any, indent: int = 1) -> str:
  """JSON text with one key per line and every list of scalars on one line."""

  def encode(v: Any, level: int) -> str:
    pad, end = " " * (indent * (level + 1)), " " * (indent * level)
    if isinstance(v, dict):
      if not v:
        return "{}"
      items = [f"{pad}{json.dumps(k if isinstance(k, str) else _scalar(k))}: " for k in v]
      body = ",\n".join(i + encode(x, level + 1) for i, x in zip(items, v.values(), strict=True))
      return "{\n" + body + "\n" + end + "}"
    if isinstance(v, list | tuple):
      if all(not isinstance(x, dict | list | tuple) for x in v):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
      return "[\n" + ",\n".join(pad + encode(x, level + 1) for x in v) + "\n" + end + "]"
    if isinstance(v, np.ndarray):
      return encode(v.tolist(), level)
    return _scalar(v)

  return encode(value, 0) + "\n"


def write(
  results: dict[str, Any],
  out_dir: Path,
  name: str,
  markdown: Callable[[dict[str, Any]], str],
  plot: Callable[[dict[str, Any], Path], None] | None = None,
  *,
  module: str | None = None,
  command: str | None = None,
) -> list[Path]:
  """Writes ``name.json``, ``name.md`` and, given ``plot``, ``name.png``; returns their paths.

  Unless ``results`` already holds one, a ``provenance`` record (:func:`provenance`) is added
  to ``results`` before writing, for ``module`` (default ``benchmarks.<name>``) and
  ``command`` (default ``python -m <module>``, with ``--quick`` if ``results["quick"]``), with
  the seeds found in ``results["config"]`` and the wall time ``results["wall_time_s"]``.
  The Markdown gets the provenance as a footer.
  """
  if "provenance" not in results:
    module = module or f"benchmarks.{name}"
    if command is None:
      command = f"python -m {module}" + (" --quick" if results.get("quick") else "")
    results["provenance"] = provenance(
      module,
      command=command,
      seeds=seeds_of(results.get("config")),
      wall_time_s=results.get("wall_time_s"),
    )
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = [out_dir / f"{name}.json", out_dir / f"{name}.md"]
  paths[0].write_text(dumps(results))
  text = markdown(results)
  paths[1].write_text(text.rstrip("\n") + "\n\n" + markdown_footer(results["provenance"]))
  if plot is not None:
    paths.append(out_dir / f"{name}.png")
    plot(results, paths[2])
  return paths


# --------------------------------------------------------------------------------------
# Staleness
# --------------------------------------------------------------------------------------

State = Literal["fresh", "noted", "stale"]


@dataclasses.dataclass(frozen=True)
class Status:
  """Whether a results file still matches the sources that produce it.

  Attributes:
    path: the JSON file, relative to the repository root.
    state: ``"fresh"`` (recorded source hash = current one), ``"noted"`` (not fresh, with a
      valid ``stale_note``) or ``"stale"`` (not fresh, no valid note).
    command: the command that regenerates it.
    detail: why it is not fresh (changed files, missing provenance, a malformed note).
  """

  path: str
  state: State
  command: str
  detail: str = ""


def _note_problem(note: Any) -> str | None:
  if not isinstance(note, dict):
    return "stale_note must be an object with 'date' and 'reason'"
  try:
    datetime.date.fromisoformat(str(note.get("date")))
  except ValueError:
    return f"stale_note date {note.get('date')!r} is not YYYY-MM-DD"
  if not str(note.get("reason", "")).strip():
    return "stale_note needs a non-empty reason"
  return None


def regenerate_command(path: Path, results: Any, *, root: Path = REPO_ROOT) -> str:
  """The command recorded in a results file, else ``python -m benchmarks.<file stem>``."""
  if isinstance(results, dict):
    for record in (results.get("provenance"), results.get("stale_note")):
      if isinstance(record, dict) and record.get("command"):
        return str(record["command"])
  stem = path.stem
  if (root / "benchmarks" / f"{stem}.py").is_file():
    return f"python -m benchmarks.{stem}"
  return f"python -m benchmarks.{path.parent.name}"


def status(path: Path, *, root: Path = REPO_ROOT) -> Status:
  """The :class:`Status` of the results file at ``path``."""
  rel = path.resolve().relative_to(root.resolve()).as_posix()
  results = json.loads(path.read_text())
  command = regenerate_command(path, results, root=root)
  note = results.get("stale_note") if isinstance(results, dict) else None
  record = results.get("provenance") if isinstance(results, dict) else None
  if isinstance(record, dict) and record.get("source_hash"):
    try:
      files = source_files(record["module"], root=root)
    except ValueError as e:
      return Status(rel, "stale", command, str(e))
    current = file_hashes(files, root=root)
    if combined_hash(current) == record["source_hash"]:
      return Status(rel, "fresh", command)
    recorded = record.get("source_files", {})
    changed = sorted(f for f in set(current) | set(recorded) if current.get(f) != recorded.get(f))
    detail = "sources changed since the run: " + ", ".join(changed)
  else:
    detail = "no source hash recorded"
  if note is None:
    return Status(rel, "stale", command, detail)
  problem = _note_problem(note)
  if problem is not None:
    return Status(rel, "stale", command, f"{detail}; {problem}")
  return Status(rel, "noted", command, f"{detail}; noted {note['date']}: {note['reason']}")


def committed_results(*, root: Path = REPO_ROOT) -> list[Path]:
  """The JSON results files under ``benchmarks/results`` that git tracks (all, without git)."""
  listed = _git(["ls-files", "--", "benchmarks/results"], root)
  if listed is None:
    return sorted((root / "benchmarks" / "results").rglob("*.json"))
  return sorted(root / line for line in listed.splitlines() if line.endswith(".json"))


# --------------------------------------------------------------------------------------
# Check
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Check:
  """One number (or sequence of numbers) of a recorded result and its rerun.

  Attributes:
    name: what it is, e.g. ``"mnist1d symmetric:0.4 / sgd seed 0: train loss, epochs 1-2"``.
    recorded: the number(s) in the results file.
    rerun: the number(s) of the rerun.
    rtol: relative tolerance on another machine.
    atol: absolute tolerance on another machine.
    statistical: the rerun is an independent Monte-Carlo estimate of the recorded number
      (fewer samples, other draws), never bitwise equal: the tolerance applies everywhere.
  """

  name: str
  recorded: float | Sequence[float]
  rerun: float | Sequence[float]
  rtol: float = 0.0
  atol: float = 0.0
  statistical: bool = False

  def max_error(self) -> float:
    """The largest ``|rerun − recorded|`` (``inf`` for a shape mismatch or a lone NaN)."""
    a = np.atleast_1d(np.asarray(self.recorded, np.float64))
    b = np.atleast_1d(np.asarray(self.rerun, np.float64))
    if a.shape != b.shape:
      return math.inf
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.where(both_nan, 0.0, np.abs(a - b))
    return float(np.max(np.nan_to_num(diff, nan=math.inf), initial=0.0))

  def passes(self, *, bitwise: bool) -> bool:
    """Bitwise equality, or ``|rerun − recorded| <= atol + rtol |recorded|`` elementwise."""
    a = np.atleast_1d(np.asarray(self.recorded, np.float64))
    b = np.atleast_1d(np.asarray(self.rerun, np.float64))
    if a.shape != b.shape:
      return False
    if bitwise and not self.statistical:
      return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.all(np.isclose(b, a, rtol=self.rtol, atol=self.atol, equal_nan=True)))


def compare(
  checks: Sequence[Check], recorded: dict[str, Any], *, bitwise: bool | None = None
) -> tuple[bool, str]:
  """Compares reruns with a recorded result; returns ``(passed, report)``.

  Args:
    checks: the rerun numbers.
    recorded: the results file they were compared with (its provenance decides the mode).
    bitwise: force the mode; ``None``: bitwise when this machine has the recorded run's
      :func:`machine_fingerprint`, else within the tolerances of ``checks``.
  """
  record = recorded.get("provenance") or {}
  same = record.get("machine_fingerprint") == machine_fingerprint(environment())
  exact: bool = same if bitwise is None else bitwise
  mode = (
    "bitwise (same machine fingerprint as the recorded run)"
    if exact
    else "within the stated tolerances (another machine, or no fingerprint recorded)"
  )
  lines = [f"Check against the recorded run, {mode}:", ""]
  lines += ["| quantity | max abs. difference | tolerance | result |", "|---|---|---|---|"]
  passed = True
  for c in checks:
    ok = c.passes(bitwise=exact)
    passed &= ok
    tol = "bitwise" if exact and not c.statistical else f"atol {c.atol:.3g} + rtol {c.rtol:g}"
    lines.append(f"| {c.name} | {c.max_error():.3g} | {tol} | {'ok' if ok else 'FAIL'} |")
  lines += ["", f"{len(checks)} quantities, {'all agree' if passed else 'MISMATCH'}."]
  return passed, "\n".join(lines)


def run_check(
  benchmark: ModuleType, path: Path, *, quick: bool, progress: bool
) -> tuple[bool, str]:
  """Reruns ``benchmark``'s check subset of the results at ``path``; ``(passed, report)``."""
  check_fn = getattr(benchmark, "check", None)
  if check_fn is None:
    raise ValueError(f"{benchmark.__name__} defines no check.")
  if not path.is_file():
    raise FileNotFoundError(f"no results file {path} to check against.")
  recorded = json.loads(path.read_text())
  state = status(path) if path.resolve().is_relative_to(REPO_ROOT) else None
  start = time.perf_counter()
  checks = check_fn(recorded, quick=quick, progress=progress)
  passed, report = compare(checks, recorded)
  header = f"Checked {path} in {time.perf_counter() - start:.0f} s."
  if state is not None and state.state != "fresh":
    header += (
      f" The file is {state.state}: {state.detail}. A mismatch may come from the changed "
      f"sources; regenerate with `{state.command}`."
    )
  return passed, header + "\n\n" + report


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def module_name(benchmark: ModuleType) -> str:
  """The importable name of a benchmark module, also when it runs as ``__main__``."""
  spec = getattr(benchmark, "__spec__", None)
  return spec.name if spec is not None else benchmark.__name__


def main(argv: Sequence[str] | None, benchmark: ModuleType) -> dict[str, Any]:
  """``python -m benchmarks.<name> [--quick] [--check] [--out DIR] [--no-progress]``.

  ``benchmark`` is the benchmark's module: its docstring describes it, and it defines
  ``run(config, *, progress)``, the configurations ``DEFAULT`` and ``QUICK`` (with
  ``--quick``), ``markdown(results)``, if it draws a figure ``plot(results, path)``, and for
  ``--check`` ``check(recorded, *, quick, progress) -> list[Check]``. Records whether the run
  was quick and its wall time, writes the results with :func:`write` (provenance included),
  prints the Markdown report and the paths written, and returns the results.

  With ``--check`` nothing is written: the check subset of ``DIR/<name>.json`` is rerun and
  compared (:func:`compare`); the report is printed and returned under ``"check"``, and a
  mismatch exits with status 1.
  """
  module = module_name(benchmark)
  name = module.rsplit(".", 1)[-1]
  parser = argparse.ArgumentParser(
    prog=f"python -m {module}", description=(benchmark.__doc__ or "").split("\n")[0]
  )
  parser.add_argument("--quick", action="store_true", help="a small smoke run (or check)")
  parser.add_argument(
    "--check",
    action="store_true",
    help="rerun a reduced subset and compare it with DIR/<name>.json; writes nothing",
  )
  parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="output folder")
  parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
  args = parser.parse_args(argv)
  if args.check:
    try:
      passed, report = run_check(
        benchmark, args.out / f"{name}.json", quick=args.quick, progress=not args.no_progress
      )
    except (FileNotFoundError, KeyError, ValueError) as e:
      raise SystemExit(f"cannot check {args.out / f'{name}.json'}: {e!r}") from e
    print(report)
    if not passed:
      raise SystemExit(1)
    return {"check": {"passed": passed, "report": report}}
  config = benchmark.QUICK if args.quick else benchmark.DEFAULT
  start = time.perf_counter()
  results = benchmark.run(config, progress=not args.no_progress)
  results["quick"] = args.quick
  results["provenance"] = provenance(
    module,
    command=f"python -m {module}" + (" --quick" if args.quick else ""),
    seeds=seeds_of(config),
    wall_time_s=time.perf_counter() - start,
  )
  plot = getattr(benchmark, "plot", None)
  paths = write(results, args.out, name, benchmark.markdown, plot)
  print(benchmark.markdown(results))
  print("wrote", ", ".join(str(x) for x in paths))
  return results


def _status_main(argv: Sequence[str] | None = None) -> int:
  """``python -m benchmarks._report``: the status of every committed results file."""
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks._report",
    description="Lists the committed results files: fresh, stale with a note, or stale.",
  )
  parser.parse_args(argv)
  worst = 0
  for path in committed_results():
    s = status(path)
    print(f"{s.state:6s} {s.path}: regenerate with `{s.command}`")
    if s.detail:
      print(f"       {s.detail}")
    worst = max(worst, s.state == "stale")
  return worst


if __name__ == "__main__":
  sys.exit(_status_main())
