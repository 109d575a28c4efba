"""Sphinx configuration of the fsgld_optax documentation.

``make docs`` builds it (HTML, warnings as errors). Two kinds of pages are generated here on
every build, into folders that git ignores:

- ``api/``: one page per public module (``fsgld_optax`` and each public subpackage), one
  entry per name of the module's ``__all__``, so a new public name gets its entry without
  anyone editing these pages;
- ``tutorials/``: the committed notebooks of ``notebooks/``, copied as they are and rendered
  by myst-nb without being executed (the test suite executes them).
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
import pkgutil
import shutil
import sys
import types
from typing import Any

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import fsgld_optax  # noqa: E402

project = "fsgld_optax"
author = "fsgld_optax contributors"
copyright = "fsgld_optax contributors"
release = fsgld_optax.__version__
version = release

extensions = [
  "sphinx.ext.autodoc",
  "sphinx.ext.autosummary",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
  "sphinx.ext.intersphinx",
  "myst_nb",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "_inventories", "**.ipynb_checkpoints"]
# The benchmark tables are written by the benchmarks, with their own heading levels.
suppress_warnings = ["myst.header"]
root_doc = "index"

# Broken references fail the build (with -W): every :func:/:class:/:mod: must resolve.
nitpicky = True

# Google-style docstrings.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
napoleon_attr_annotations = False  # field types are in the docstrings, not the runtime paths

autodoc_default_options = {"member-order": "bysource"}
# Signatures as the user calls them; the docstrings' Args say what each argument is.
autodoc_typehints = "none"
autodoc_preserve_defaults = True
autosummary_generate = False

# Notebooks are rendered as committed; the test suite (pytest --nbmake) executes them.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Links to jax, optax and flax. The build runs offline, so the inventories are read from
# docs/_inventories/ (see build_inventories.py there for where they come from).
INVENTORIES = DOCS / "_inventories"
intersphinx_mapping = {
  "jax": ("https://docs.jax.dev/en/latest/", str(INVENTORIES / "jax.inv")),
  "optax": ("https://optax.readthedocs.io/en/latest/", str(INVENTORIES / "optax.inv")),
  "flax": ("https://flax.readthedocs.io/en/latest/", str(INVENTORIES / "flax.inv")),
}

# Libraries without a shipped inventory: their names render as code, not as broken links.
nitpick_ignore_regex = [
  ("py:.*", r"(collections|typing|types|numpy|np|matplotlib|chex|orbax)(\..*)?"),
]

html_theme = "furo"
html_title = f"fsgld_optax {release}"

# --------------------------------------------------------------------------------------------
# Generated pages.


def public_modules() -> list[str]:
  """``fsgld_optax`` and each of its public subpackages/modules (no leading underscore)."""
  names = ["fsgld_optax"]
  for info in pkgutil.iter_modules(fsgld_optax.__path__):
    if not info.name.startswith("_"):
      names.append(f"fsgld_optax.{info.name}")
  return names


def _kind(obj: object) -> str:
  if isinstance(obj, types.ModuleType):
    return "module"
  if inspect.isclass(obj):
    return "class"
  if callable(obj):
    return "function"
  return "data"


def _summary(obj: object) -> str:
  doc = inspect.getdoc(obj) or ""
  return doc.strip().splitlines()[0] if doc.strip() else ""


def _api_page(module_name: str) -> str:
  module = importlib.import_module(module_name)
  names = list(getattr(module, "__all__", []))
  title = f"``{module_name}``"
  lines = [title, "=" * len(title), "", f".. automodule:: {module_name}", ""]
  lines += [f".. currentmodule:: {module_name}", ""]
  groups: dict[str, list[str]] = {"class": [], "function": [], "data": [], "module": []}
  for name in names:
    groups[_kind(getattr(module, name))].append(name)
  entries = groups["class"] + groups["function"] + groups["data"]
  if entries:
    lines += [".. autosummary::", "", *(f"   {n}" for n in entries), ""]
  if groups["module"]:
    heading = "Submodules"
    lines += [heading, "-" * len(heading), ""]
    for name in groups["module"]:
      full = f"{module_name}.{name}"
      lines += [f"- :mod:`{full}`: {_summary(getattr(module, name))}"]
    lines += [""]
  directives = {"class": "autoclass", "function": "autofunction", "data": "autodata"}
  headings = {"class": "Classes", "function": "Functions", "data": "Constants and types"}
  for kind, directive in directives.items():
    if not groups[kind]:
      continue
    lines += [headings[kind], "-" * len(headings[kind]), ""]
    for name in groups[kind]:
      lines += [f".. {directive}:: {name}"]
      obj = getattr(module, name)
      # A NamedTuple's fields are documented by its docstring's Attributes section.
      if kind == "class" and not (issubclass(obj, tuple) and hasattr(obj, "_fields")):
        lines += ["   :members:"]
      lines += [""]
  return "\n".join(lines)


def _write_if_changed(path: pathlib.Path, text: str) -> None:
  if not path.exists() or path.read_text(encoding="utf-8") != text:
    path.write_text(text, encoding="utf-8")


def generate_api_pages() -> None:
  out = DOCS / "api"
  out.mkdir(exist_ok=True)
  modules = public_modules()
  for stale in out.glob("*.rst"):
    if stale.stem not in modules and stale.stem != "index":
      stale.unlink()
  for name in modules:
    _write_if_changed(out / f"{name}.rst", _api_page(name))
  index = [
    "API reference",
    "=============",
    "",
    "Generated from the docstrings: one page per public module, one entry per name in its",
    "``__all__``. Start with :func:`fsgld_optax.fsgld` and",
    ":func:`fsgld_optax.perturbed_value_and_grad`; the :doc:`/overview` says how they fit.",
    "",
    ".. toctree::",
    "   :maxdepth: 2",
    "",
    *(f"   {name}" for name in modules),
    "",
  ]
  _write_if_changed(out / "index.rst", "\n".join(index))


def copy_notebooks() -> None:
  out = DOCS / "tutorials"
  out.mkdir(exist_ok=True)
  notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
  for stale in out.glob("*.ipynb"):
    if stale.name not in {nb.name for nb in notebooks}:
      stale.unlink()
  for nb in notebooks:
    target = out / nb.name
    if not target.exists() or target.read_bytes() != nb.read_bytes():
      shutil.copyfile(nb, target)
  readme = (ROOT / "notebooks" / "README.md").read_text(encoding="utf-8").splitlines()
  body = readme[1:] if readme and readme[0].startswith("# ") else readme
  index = [
    "# Tutorials",
    "",
    "The notebooks of `notebooks/`, shown as committed (without outputs: run them to see the",
    "figures). Each one runs on a laptop CPU in a few minutes.",
    "",
    "```{toctree}",
    ":maxdepth: 1",
    "",
    *(nb.stem for nb in notebooks),
    "```",
    *body,
    "",
  ]
  _write_if_changed(out / "index.md", "\n".join(index))


def _public_aliases(target: str) -> list[str]:
  """Public spellings of a runtime path: ``optax._src.base.X`` -> ``optax.X``."""
  parts = target.split(".")
  if parts[0] == "jaxlib":
    parts = ["jax", *parts]
  if len(parts) < 3:
    return []
  return [".".join([*parts[:k], parts[-1]]) for k in range(len(parts) - 2, 0, -1)]


def resolve_runtime_paths(app: Any, env: Any, node: Any, contnode: Any) -> Any:
  """Resolve references to an object's runtime module path through its public name."""
  from sphinx.ext import intersphinx

  package = node.get("reftarget", "").split(".")[0]
  if node.get("refdomain") != "py" or package not in ("jax", "jaxlib", "optax", "flax"):
    return None
  for alias in [node["reftarget"], *_public_aliases(node["reftarget"])]:
    for reftype in (node["reftype"], "obj"):  # type aliases are data, not classes
      candidate = node.deepcopy()
      candidate["reftarget"], candidate["reftype"] = alias, reftype
      resolved = intersphinx.missing_reference(app, env, candidate, contnode)
      if resolved is not None:
        return resolved
  return None


def setup(app: Any) -> dict[str, Any]:
  app.connect("missing-reference", resolve_runtime_paths, priority=900)
  return {"parallel_read_safe": True}


def generate_result_pages() -> None:
  """One page per committed benchmark table, with the benchmark's figure when it has one."""
  results = ROOT / "benchmarks" / "results"
  out = DOCS / "results"
  out.mkdir(exist_ok=True)
  pages: list[str] = []
  for table in sorted(results.rglob("*.md")):
    name = table.relative_to(results).with_suffix("").as_posix().replace("/", "-")
    text = table.read_text(encoding="utf-8")
    rel = pathlib.Path("..", "..", table.relative_to(ROOT)).as_posix()
    lines = [] if text.lstrip().startswith("#") else [f"# {name}", ""]
    lines += [f"```{{include}} {rel}", ":relative-images:", "```", ""]
    figure = table.with_suffix(".png")
    if figure.exists() and figure.name not in text:
      lines += [f"![{name}](../../{figure.relative_to(ROOT).as_posix()})", ""]
    _write_if_changed(out / f"{name}.md", "\n".join(lines))
    pages.append(name)
  for stale in out.glob("*.md"):
    if stale.stem not in pages and stale.stem != "index":
      stale.unlink()
  index = [
    "# Result tables",
    "",
    "The committed result files of `benchmarks/results/`, as the benchmarks wrote them, each",
    "with its figure. Each is regenerated by one command ({doc}`/benchmarks`).",
    "",
    "```{toctree}",
    ":maxdepth: 1",
    "",
    *pages,
    "```",
    "",
  ]
  _write_if_changed(out / "index.md", "\n".join(index))


generate_api_pages()
copy_notebooks()
generate_result_pages()
