"""The public surface: every exported name imports and is documented."""

import importlib
import pathlib
import re

import pytest

import fsgld_optax

PACKAGE = pathlib.Path(fsgld_optax.__file__).parent


@pytest.mark.parametrize("name", fsgld_optax.__all__)
def test_every_public_name_imports_and_has_a_docstring(name):
  obj = getattr(fsgld_optax, name)
  assert obj.__doc__ and obj.__doc__.strip(), f"{name} has no docstring"


def test_all_is_sorted_and_unique():
  assert list(fsgld_optax.__all__) == sorted(set(fsgld_optax.__all__))


def test_version_is_a_string():
  assert re.fullmatch(r"\d+\.\d+\.\d+.*", fsgld_optax.__version__)


def test_factories_cite_the_paper():
  for factory in (fsgld_optax.fsgld, fsgld_optax.perturbed_value_and_grad):
    assert "arxiv.org/abs/2510.02174" in factory.__doc__


def test_no_private_jax_or_optax_imports():
  pattern = re.compile(r"^\s*(from|import)\s+(jax|optax)\._src", re.MULTILINE)
  offenders = [p for p in PACKAGE.rglob("*.py") if pattern.search(p.read_text())]
  assert not offenders, offenders


@pytest.mark.parametrize("module", ["fsgld_optax._fsgld", "fsgld_optax._perturb"])
def test_core_modules_import_without_flax(module):
  source = pathlib.Path(importlib.import_module(module).__file__).read_text()
  assert "import flax" not in source and "from flax" not in source
