"""The documentation: every public name has an API entry; notebooks and results are pages.

These tests read the HTML that ``make docs`` builds into ``docs/_build/html`` (``make test``
builds it just before running pytest). When that build is missing or older than the
sources it documents, the tests rebuild it first with the same command, so they never check
a stale build.
"""

from __future__ import annotations

import fcntl
import importlib
import os
import pathlib
import pkgutil
import re
import subprocess
import sys
import zlib

import pytest

import fsgld_optax

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BUILD = DOCS / "_build" / "html"
GENERATED = ("_build", "api", "tutorials", "results")


def public_modules() -> list[str]:
  """``fsgld_optax`` and its public subpackages: every module without a leading underscore."""
  return ["fsgld_optax"] + [
    f"fsgld_optax.{m.name}"
    for m in pkgutil.iter_modules(fsgld_optax.__path__)
    if not m.name.startswith("_")
  ]


def public_names() -> list[str]:
  names = []
  for module_name in public_modules():
    module = importlib.import_module(module_name)
    names += [f"{module_name}.{name}" for name in module.__all__]
  return names


def _sources() -> list[pathlib.Path]:
  """The files the built docs depend on."""
  files = [*(ROOT / "fsgld_optax").rglob("*.py"), *(ROOT / "notebooks").glob("*")]
  files += [*(ROOT / "benchmarks" / "results").rglob("*"), ROOT / "benchmarks" / "README.md"]
  files += [
    p for p in DOCS.rglob("*") if p.is_file() and p.relative_to(DOCS).parts[0] not in GENERATED
  ]
  return files


def _is_fresh(inventory: pathlib.Path) -> bool:
  if not inventory.exists():
    return False
  built = inventory.stat().st_mtime
  return all(p.stat().st_mtime <= built for p in _sources() if p.is_file())


@pytest.fixture(scope="session")
def html() -> pathlib.Path:
  """``docs/_build/html``, rebuilt as ``make docs`` does when it is older than its sources."""
  BUILD.parent.mkdir(parents=True, exist_ok=True)
  # One build at a time: pytest-xdist workers wait here, then find the fresh build.
  with open(BUILD.parent / ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not _is_fresh(BUILD / "objects.inv"):
      result = subprocess.run(
        [
          sys.executable,
          "-m",
          "sphinx",
          "-b",
          "html",
          "-E",
          "-W",
          "--keep-going",
          "-q",
          DOCS,
          BUILD,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        check=False,
      )
      if result.returncode != 0:
        (BUILD / "objects.inv").unlink(missing_ok=True)  # never taken for a good build
      assert result.returncode == 0, f"the docs build failed:\n{result.stderr[-5000:]}"
  return BUILD


def read_inventory(path: pathlib.Path) -> dict[str, tuple[str, str]]:
  """``{name: (domain:role, uri)}`` from a Sphinx ``objects.inv`` (format version 2)."""
  data = path.read_bytes()
  header_end = 0
  for _ in range(4):
    header_end = data.index(b"\n", header_end) + 1
  assert data.startswith(b"# Sphinx inventory version 2"), path
  entries = {}
  pattern = re.compile(r"(.+?)\s+(\S+:\S+)\s+(-?\d+)\s+(\S*)\s+(.*)")
  for line in zlib.decompress(data[header_end:]).decode().splitlines():
    match = pattern.fullmatch(line)
    if match:
      name, role, _, uri, _ = match.groups()
      entries.setdefault(name, (role, uri.replace("$", name)))
  return entries


def missing_api_entries(inventory: dict[str, tuple[str, str]], names: list[str]) -> list[str]:
  """The public names with no Python-domain entry on a page of the API reference."""
  missing = []
  for name in names:
    role, uri = inventory.get(name, ("", ""))
    if not (role.startswith("py:") and uri.startswith("api/")):
      missing.append(name)
  return missing


def test_public_modules_include_the_documented_subpackages():
  assert {"fsgld_optax", "fsgld_optax.diagnostics", "fsgld_optax.flax"} <= set(public_modules())


def test_every_public_name_has_an_entry_in_the_api_reference(html):
  inventory = read_inventory(html / "objects.inv")
  assert not missing_api_entries(inventory, public_names())
  for module in public_modules():
    assert (html / "api" / f"{module}.html").exists(), module


def test_the_check_finds_a_name_without_an_entry(html):
  inventory = read_inventory(html / "objects.inv")
  names = public_names()
  del inventory[names[0]]
  inventory["fsgld_optax.documented_elsewhere"] = ("py:function", "overview.html#x")
  assert missing_api_entries(inventory, [*names, "fsgld_optax.documented_elsewhere"]) == [
    names[0],
    "fsgld_optax.documented_elsewhere",
  ]


def test_every_api_entry_shows_its_docstring(html):
  """Each entry renders the summary line of the object's docstring on its module's page."""
  for name in public_names():
    module_name, attr = name.rsplit(".", 1)
    obj = getattr(importlib.import_module(module_name), attr)
    summary = (obj.__doc__ or "").strip().splitlines()[0]
    words = re.findall(r"[A-Za-z]{4,}", summary)[:3]
    page = (html / "api" / f"{module_name}.html").read_text(encoding="utf-8")
    assert all(word in page for word in words), (name, words)


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=str)
def test_every_notebook_is_a_tutorial(html, notebook):
  page = html / "tutorials" / f"{notebook.stem}.html"
  assert page.exists()
  assert "fsgld_optax" in page.read_text(encoding="utf-8")


def test_every_committed_result_and_figure_is_in_the_docs(html):
  results = ROOT / "benchmarks" / "results"
  images = {p.stem for p in (html / "_images").glob("*.png")}
  for table in results.rglob("*.md"):
    name = table.relative_to(results).with_suffix("").as_posix().replace("/", "-")
    assert (html / "results" / f"{name}.html").exists(), table
  for figure in results.rglob("*.png"):
    assert figure.stem in images, figure


def test_readme_links_into_the_docs_exist():
  readme = (ROOT / "README.md").read_text(encoding="utf-8")
  links = re.findall(r"\]\(((?:docs|benchmarks|notebooks|examples)/[^)#]*)", readme)
  assert any(link.startswith("docs/") for link in links)
  for link in links:
    assert (ROOT / link).exists(), link
