"""Structural checks of the notebooks; ``pytest --nbmake`` executes them (in quick mode).

These checks read the JSON only: notebooks are committed without outputs, take their step
counts from the environment, save their figures and assert that the figures exist, and are
listed in ``notebooks/README.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def _load(path: Path) -> dict[str, Any]:
  return json.loads(path.read_text(encoding="utf-8"))


def _source(cell: dict[str, Any]) -> str:
  source = cell["source"]
  return source if isinstance(source, str) else "".join(source)


def _code(notebook: dict[str, Any]) -> list[str]:
  return [_source(c) for c in notebook["cells"] if c["cell_type"] == "code"]


def test_the_notebooks_exist() -> None:
  names = [p.name for p in NOTEBOOKS]
  assert names == [
    "01_quickstart.ipynb",
    "02_flat_minima.ipynb",
    "03_noisy_labels.ipynb",
    "04_bayesian.ipynb",
  ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path: Path) -> None:
  for i, cell in enumerate(_load(path)["cells"]):
    if cell["cell_type"] == "code":
      assert cell.get("outputs") == [], f"cell {i} of {path.name} has outputs"
      assert cell.get("execution_count") is None, f"cell {i} of {path.name} was executed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_step_counts_come_from_the_environment(path: Path) -> None:
  setup = _code(_load(path))[0]
  assert 'os.environ.get("FSGLD_NOTEBOOK_QUICK") == "1"' in setup
  assert 'os.environ.get("FSGLD_NOTEBOOK_STEPS"' in setup


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_saves_figures_and_checks_them(path: Path) -> None:
  code = _code(_load(path))
  saved = {
    line.split('FIGURES / "', 1)[1].split('"', 1)[0]
    for cell in code
    for line in cell.splitlines()
    if "savefig(FIGURES / " in line
  }
  assert saved, f"{path.name} saves no figure"
  assert all(name.startswith(path.stem[:3]) and name.endswith(".png") for name in saved)
  final = code[-1]
  assert "assert" in final
  for name in saved:
    assert f'"{name}"' in final, f"{path.name} does not check that {name} exists"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_listed_in_the_readme(path: Path) -> None:
  assert f"({path.name})" in (NOTEBOOKS_DIR / "README.md").read_text(encoding="utf-8")
