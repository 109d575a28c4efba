"""Provenance of the committed benchmark results, and the machinery that records it.

The main test fails when a committed results file under ``benchmarks/results/`` no longer
matches the sources that produce it (``benchmarks._report.status``), unless the file carries
a dated ``stale_note``; its message lists every stale file and the command that regenerates
it. The other tests pin down the machinery on small trees written here.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import _report

ROOT = _report.REPO_ROOT


def test_committed_results_match_their_sources() -> None:
  files = _report.committed_results()
  assert files, "no committed results found"
  statuses = [_report.status(path) for path in files]
  stale = [s for s in statuses if s.state == "stale"]
  noted = [s for s in statuses if s.state == "noted"]
  if noted:  # shown by pytest -rA / -s; they pass until the note is removed
    print("\n".join(f"noted: {s.path} ({s.detail}); regenerate: {s.command}" for s in noted))
  message = "\n".join(
    f"{s.path} is stale ({s.detail}).\n  Regenerate it with `{s.command}`, or add "
    '"stale_note": {"date": "YYYY-MM-DD", "reason": "..."} to the JSON to say why not.'
    for s in stale
  )
  assert not stale, "\n" + message


def test_committed_results_are_full_runs_with_provenance_in_both_files() -> None:
  for path in _report.committed_results():
    results = json.loads(path.read_text())
    assert isinstance(results, dict), path
    assert results.get("quick") is not True, f"{path} is a --quick run"
    markdown = path.with_suffix(".md")
    record = results.get("provenance")
    if record is None:
      assert "stale_note" in results, path
      if markdown.is_file():
        assert "*Provenance:* not recorded" in markdown.read_text(), markdown
      continue
    assert record["module"].startswith("benchmarks."), path
    assert record["source_files"] and record["environment"]["cpu_model"], path
    if markdown.is_file():  # the Markdown comes from the same run as the JSON
      assert record["source_hash"][:19] in markdown.read_text(), markdown


def write_tree(root: Path, files: dict[str, str]) -> None:
  for name, text in files.items():
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


TREE = {
  "benchmarks/__init__.py": "",
  "benchmarks/_report.py": "X = 1\n",
  "benchmarks/bench.py": (
    "import json\nimport fsgld_optax\nfrom benchmarks import _report, helper\n"
    "from benchmarks.models import build\nEXTRA_SOURCES = ('data/table.csv',)\n"
  ),
  "benchmarks/helper.py": "import benchmarks.deep\n",
  "benchmarks/deep.py": "Y = 2\n",
  "benchmarks/models.py": "def build(): ...\n",
  "benchmarks/unused.py": "Z = 3\n",
  "fsgld_optax/__init__.py": "from fsgld_optax import _core\n",
  "fsgld_optax/_core.py": "W = 4\n",
  "fsgld_optax/sub/_more.py": "V = 5\n",
  "data/table.csv": "a,b\n",
}


def test_source_files_follow_imports_and_cover_the_package(tmp_path: Path) -> None:
  write_tree(tmp_path, TREE)
  assert _report.source_files("benchmarks.bench", root=tmp_path) == [
    "benchmarks/bench.py",
    "benchmarks/deep.py",
    "benchmarks/helper.py",
    "benchmarks/models.py",
    "data/table.csv",
    "fsgld_optax/__init__.py",
    "fsgld_optax/_core.py",
    "fsgld_optax/sub/_more.py",
  ]
  with pytest.raises(ValueError, match=r"benchmarks\.missing"):
    _report.source_files("benchmarks.missing", root=tmp_path)


def test_real_benchmark_sources() -> None:
  files = _report.source_files("benchmarks.noisy_labels")
  for name in ("noisy_labels", "data", "models", "optimizers", "train"):
    assert f"benchmarks/{name}.py" in files
  assert "benchmarks/_report.py" not in files
  assert "benchmarks/cost.py" not in files
  assert "fsgld_optax/__init__.py" in files
  # The sweeps reuse the noisy-label trainer, so they depend on it.
  assert "benchmarks/noisy_labels.py" in _report.source_files("benchmarks.sweeps")


def make_result(root: Path, **extra: object) -> Path:
  hashes = _report.file_hashes(_report.source_files("benchmarks.bench", root=root), root=root)
  record = {
    "module": "benchmarks.bench",
    "command": "python -m benchmarks.bench",
    "source_hash": _report.combined_hash(hashes),
    "source_files": hashes,
  }
  path = root / "benchmarks" / "results" / "bench.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({"provenance": record, **extra}))
  return path


@pytest.mark.parametrize(
  "changed", ["benchmarks/bench.py", "benchmarks/deep.py", "fsgld_optax/sub/_more.py"]
)
def test_status_detects_a_changed_source(tmp_path: Path, changed: str) -> None:
  write_tree(tmp_path, TREE)
  path = make_result(tmp_path)
  assert _report.status(path, root=tmp_path).state == "fresh"
  # Files that do not produce the result may change freely.
  (tmp_path / "benchmarks" / "unused.py").write_text("Z = 4\n")
  (tmp_path / "benchmarks" / "_report.py").write_text("X = 2\n")
  assert _report.status(path, root=tmp_path).state == "fresh"
  (tmp_path / changed).write_text((tmp_path / changed).read_text() + "# edited\n")
  s = _report.status(path, root=tmp_path)
  assert s.state == "stale"
  assert changed in s.detail and s.command == "python -m benchmarks.bench"
  # A new source file makes it stale too.
  (tmp_path / changed).write_text(TREE[changed])
  (tmp_path / "fsgld_optax" / "_new.py").write_text("U = 6\n")
  assert _report.status(path, root=tmp_path).state == "stale"


@pytest.mark.parametrize(
  ("note", "state"),
  [
    ({"date": "2026-12-01", "reason": "rerun after the refactor"}, "noted"),
    ({"date": "December 2026", "reason": "rerun after the refactor"}, "stale"),
    ({"date": "2026-12-01", "reason": " "}, "stale"),
    ("rerun later", "stale"),
  ],
)
def test_stale_note_must_be_dated_and_give_a_reason(
  tmp_path: Path, note: object, state: str
) -> None:
  write_tree(tmp_path, TREE)
  path = make_result(tmp_path, stale_note=note)
  assert _report.status(path, root=tmp_path).state == "fresh"
  (tmp_path / "benchmarks" / "deep.py").write_text("Y = 3\n")
  assert _report.status(path, root=tmp_path).state == state


def test_file_without_provenance_needs_a_note(tmp_path: Path) -> None:
  write_tree(tmp_path, TREE)
  path = tmp_path / "benchmarks" / "results" / "bench.json"
  path.parent.mkdir(parents=True)
  path.write_text(json.dumps({"value": 1}))
  s = _report.status(path, root=tmp_path)
  assert (s.state, s.command) == ("stale", "python -m benchmarks.bench")
  path.write_text(json.dumps({"value": 1, "stale_note": {"date": "2026-12-01", "reason": "r"}}))
  assert _report.status(path, root=tmp_path).state == "noted"


def test_write_records_provenance_in_json_and_markdown(tmp_path: Path) -> None:
  results = {"config": {"seed": 3, "search_seed": 7, "epochs": 2}, "wall_time_s": 1.5}
  paths = _report.write(
    results, tmp_path, "noisy_labels", lambda r: "## Title\n", module="benchmarks.noisy_labels"
  )
  written = json.loads(paths[0].read_text())
  record = written["provenance"]
  assert record["seeds"] == {"seed": 3, "search_seed": 7}
  assert record["wall_time_s"] == 1.5
  assert record["command"] == "python -m benchmarks.noisy_labels"
  assert record["source_hash"] == _report.combined_hash(
    _report.file_hashes(_report.source_files("benchmarks.noisy_labels"))
  )
  env = record["environment"]
  assert env["libraries"]["jax"] and env["cpu_threads"] >= 1
  assert record["machine_fingerprint"] == _report.machine_fingerprint(env)
  text = paths[1].read_text()
  assert text.startswith("## Title\n") and record["source_hash"][:19] in text


def test_fingerprint_follows_what_decides_the_bits() -> None:
  env = _report.environment() | {"xla_flags": "--a=1 --b=2"}
  base = _report.machine_fingerprint(env)
  assert _report.machine_fingerprint(env | {"load_average_1min": 99.0}) == base
  assert _report.machine_fingerprint(env | {"xla_flags": " --b=2  --a=1"}) == base
  # The host device count changes a CNN's training bits on XLA:CPU: it is not neutral.
  flags = "--a=1 --b=2 --xla_force_host_platform_device_count=8"
  assert _report.machine_fingerprint(env | {"xla_flags": flags}) != base
  assert _report.machine_fingerprint(env | {"cpu_model": "another CPU"}) != base
  assert _report.machine_fingerprint(env | {"cpu_threads": 1000}) != base


def test_check_comparison_modes() -> None:
  exact = _report.Check("x", [1.0, 2.0], [1.0, 2.0], rtol=1e-3)
  close = _report.Check("x", [1.0, 2.0], [1.0, 2.0 + 1e-4], rtol=1e-3)
  far = _report.Check("x", [1.0, 2.0], [1.0, 2.1], rtol=1e-3)
  assert exact.passes(bitwise=True) and exact.passes(bitwise=False)
  assert not close.passes(bitwise=True) and close.passes(bitwise=False)
  assert not far.passes(bitwise=False)
  assert not _report.Check("x", [1.0], [1.0, 1.0], atol=1.0).passes(bitwise=False)
  assert close.max_error() == pytest.approx(1e-4)
  passed, report = _report.compare([exact, far], {}, bitwise=False)
  assert not passed and "FAIL" in report


def test_dumps_round_trips_and_keeps_number_lists_on_one_line() -> None:
  value = {"a": [0.1, 2, None, float("inf")], "b": [{"c": "σ"}], "d": {}, 1: True}
  text = _report.dumps(value)
  assert '"a": [0.1, 2, null, Infinity]' in text
  assert json.loads(text) == json.loads(json.dumps(value))


def test_status_command_line_lists_every_committed_file() -> None:
  result = subprocess.run(
    [sys.executable, "-m", "benchmarks._report"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  files = _report.committed_results()
  stale = any(_report.status(path).state == "stale" for path in files)
  assert result.returncode == int(stale), result.stdout + result.stderr
  for path in files:
    assert path.relative_to(ROOT).as_posix() in result.stdout
