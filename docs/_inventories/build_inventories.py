"""Write Sphinx inventories (objects.inv) for jax, optax and flax from their docs sources.

The docs build runs without network access, so intersphinx reads the inventories committed
next to this script instead of downloading them. Where the network is available, the real
inventories are simply downloaded over these files, e.g.
``curl -o docs/_inventories/optax.inv https://optax.readthedocs.io/en/latest/objects.inv``.
Without it, this script rebuilds them from a checkout of each project's documentation
sources: it reads the ``.rst`` API pages and records, for every object documented there by
``autosummary`` (with a ``:toctree:``), ``autofunction``, ``autoclass``, ``autodata`` or
``automodule``, the page and anchor where Sphinx puts it. Whether a name is a class, a
function, a module or data is read from the installed package.

Usage::

  python docs/_inventories/build_inventories.py optax PATH/optax/docs
  python docs/_inventories/build_inventories.py jax PATH/jax/docs
  python docs/_inventories/build_inventories.py flax PATH/flax/docs_nnx
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
import re
import sys
import types
import zlib

HERE = pathlib.Path(__file__).resolve().parent
DIRECTIVE = re.compile(r"^(\s*)\.\. (autosummary|auto\w+|currentmodule|module)::\s*(\S*)\s*$")
OPTION = re.compile(r"^\s*:([\w-]+):\s*(.*)$")


def _resolve(name: str) -> object | None:
  """The object called ``name`` (``a.b.c``) in the installed packages, or None."""
  parts = name.split(".")
  for split in range(len(parts), 0, -1):
    try:
      obj: object = importlib.import_module(".".join(parts[:split]))
    except Exception:
      continue
    try:
      for attr in parts[split:]:
        obj = getattr(obj, attr)
    except AttributeError:
      return None
    return obj
  return None


def _role(obj: object, parent: object | None = None) -> str:
  if isinstance(obj, types.ModuleType):
    return "module"
  if inspect.isclass(obj):
    return "exception" if issubclass(obj, BaseException) else "class"
  if parent is not None and inspect.isclass(parent):
    if isinstance(obj, property):
      return "property"
    return "method" if callable(obj) else "attribute"
  return "function" if callable(obj) else "data"


def _qualify(name: str, module: str) -> str | None:
  """The full name Sphinx gives ``name`` under ``.. currentmodule:: module``."""
  candidates = [f"{module}.{name}", name] if module else [name]
  for candidate in candidates:
    if _resolve(candidate) is not None:
      return candidate
  return None


def _members(obj: object, listed: str | None) -> list[str]:
  """The members a ``:members:`` option documents (all public ones when none is listed)."""
  if listed:
    return [m.strip() for m in listed.split(",") if m.strip() and not m.strip().startswith("_")]
  if inspect.isclass(obj):
    return [m for m in vars(obj) if not m.startswith("_")]
  if isinstance(obj, types.ModuleType):
    names = getattr(obj, "__all__", None)
    if names is None:
      names = [
        n
        for n, v in vars(obj).items()
        if not n.startswith("_") and getattr(v, "__module__", None) == obj.__name__
      ]
    return list(names)
  return []


def _block(lines: list[str], start: int, indent: int) -> tuple[dict[str, str], list[str], int]:
  """Options and content lines of the directive whose header is ``lines[start - 1]``."""
  options: dict[str, str] = {}
  content: list[str] = []
  i = start
  while i < len(lines):
    line = lines[i]
    if line.strip() and len(line) - len(line.lstrip()) <= indent:
      break
    match = OPTION.match(line)
    if match and not content:
      options[match.group(1)] = match.group(2)
    elif line.strip():
      content.append(line.strip())
    i += 1
  return options, content, i


def entries_of_page(path: pathlib.Path, root: pathlib.Path) -> list[tuple[str, str, str]]:
  """(name, role, uri) for every object documented on one ``.rst`` page."""
  page = path.relative_to(root).with_suffix(".html").as_posix()
  folder = path.parent.relative_to(root).as_posix()
  folder = "" if folder == "." else folder + "/"
  lines = path.read_text(encoding="utf-8").splitlines()
  module = ""
  found: list[tuple[str, str, str]] = []

  def add(full: str, uri_page: str) -> None:
    obj = _resolve(full)
    if obj is None:
      return
    parent = _resolve(full.rsplit(".", 1)[0]) if "." in full else None
    role = _role(obj, parent)
    anchor = f"module-{full}" if role == "module" else full
    found.append((full, role, f"{uri_page}#{anchor}"))

  i = 0
  while i < len(lines):
    match = DIRECTIVE.match(lines[i])
    if not match:
      i += 1
      continue
    indent, kind, arg = len(match.group(1)), match.group(2), match.group(3)
    options, content, i = _block(lines, i + 1, indent)
    if kind in ("currentmodule", "module"):
      module = "" if arg == "None" else arg
      if kind == "module":
        add(arg, page)
    elif kind == "automodule":
      module = arg
      add(arg, page)
      if "members" in options:
        for member in _members(_resolve(arg), options["members"]):
          add(f"{arg}.{member}", page)
    elif kind == "autosummary":
      toctree = options.get("toctree")
      if toctree is None:
        continue
      for name in content:
        full = _qualify(name.split()[0].lstrip("~"), module)
        if full is not None:
          target = f"{folder}{toctree.strip().rstrip('/')}/{full}.html"
          add(full, target)
          obj = _resolve(full)
          if inspect.isclass(obj):  # autosummary class pages list their members
            for member in _members(obj, None):
              add(f"{full}.{member}", target)
    elif kind in ("autofunction", "autoclass", "autodata", "autoexception", "automethod"):
      full = _qualify(arg, module)
      if full is None:
        continue
      add(full, page)
      if kind == "autoclass" and "members" in options:
        for member in _members(_resolve(full), options["members"]):
          add(f"{full}.{member}", page)
  return found


def write_inventory(project: str, entries: list[tuple[str, str, str]], out: pathlib.Path) -> None:
  seen: dict[tuple[str, str], str] = {}
  for name, role, uri in entries:
    seen.setdefault((name, role), uri)
  body = "".join(
    f"{name} py:{role} 1 {uri.replace('#' + name, '#$') if uri.endswith('#' + name) else uri} -\n"
    for (name, role), uri in sorted(seen.items())
  )
  header = (
    "# Sphinx inventory version 2\n"
    f"# Project: {project}\n"
    "# Version: latest\n"
    "# The remainder of this file is compressed using zlib.\n"
  )
  out.write_bytes(header.encode() + zlib.compress(body.encode()))
  print(f"{out}: {len(seen)} objects")


def main(argv: list[str]) -> None:
  project, docs_root = argv[0], pathlib.Path(argv[1]).resolve()
  entries: list[tuple[str, str, str]] = []
  for path in sorted(docs_root.rglob("*.rst")):
    if "_templates" in path.parts:
      continue
    entries += entries_of_page(path, docs_root)
  write_inventory(project, entries, HERE / f"{project}.inv")


if __name__ == "__main__":
  main(sys.argv[1:])
