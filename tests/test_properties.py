"""Property tests: fSGLD on arbitrary parameter pytrees.

Random pytrees of nested dicts, lists and tuples with ``None`` leaves, scalars, zero-size
arrays, mixed float dtypes (float32, bfloat16, float16) and integer and boolean leaves.
For every tree, ``init``, the perturbed-gradient wrapper, ``update`` and
``optax.apply_updates`` run without error, keep the tree structure and every leaf's dtype,
give finite values, and leave integer and boolean leaves unchanged. Examples are
derandomised (fixed seeds) and few, since each new tree structure costs a compilation.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax

import fsgld_optax

source_of = fsgld_optax.find_fsgld_state

_SETTINGS = hypothesis.settings(
  max_examples=25,
  deadline=None,
  derandomize=True,
  database=None,
  suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
_DTYPES = ["float32", "bfloat16", "float16", "int32", "int8", "bool"]
_SHAPES = [(), (0,), (3,), (2, 0), (2, 3), (1, 4, 2)]


class _LeafSpec:
  """A leaf to be built: dtype and shape (kept abstract so hypothesis can shrink it)."""

  def __init__(self, dtype: str, shape: tuple[int, ...]) -> None:
    self.dtype, self.shape = dtype, shape

  def __repr__(self) -> str:
    return f"{self.dtype}{list(self.shape)}"


_leaf = st.one_of(
  st.none(), st.builds(_LeafSpec, st.sampled_from(_DTYPES), st.sampled_from(_SHAPES))
)
_tree_specs = st.recursive(
  _leaf,
  lambda children: st.one_of(
    st.lists(children, max_size=3),
    st.lists(children, max_size=3).map(tuple),
    st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), children, max_size=3),
  ),
  max_leaves=6,
)


def _build(spec: Any, seed: int) -> Any:
  """Materialises a tree of :class:`_LeafSpec` with values from a seeded generator."""
  rng = np.random.default_rng(seed)

  def make(leaf: Any) -> Any:
    if not isinstance(leaf, _LeafSpec):
      return leaf
    dtype = jnp.dtype(leaf.dtype)
    if dtype == jnp.bool_:
      return jnp.asarray(rng.random(leaf.shape) < 0.5)
    if jnp.issubdtype(dtype, jnp.integer):
      return jnp.asarray(rng.integers(-5, 5, leaf.shape), dtype)
    return jnp.asarray(rng.normal(size=leaf.shape), dtype)

  return jax.tree.map(make, spec, is_leaf=lambda x: isinstance(x, _LeafSpec))


def _is_float(x: Any) -> bool:
  return jnp.issubdtype(x.dtype, jnp.floating)


def _loss(params: Any, x: jax.Array) -> jax.Array:
  """A smooth loss of every floating leaf (0 for a tree without one)."""
  total = jnp.zeros([], jnp.float32)
  for leaf in jax.tree.leaves(params):
    if _is_float(leaf):
      total = total + jnp.sum(jnp.sin(leaf.astype(jnp.float32) * x) ** 2)
  return total


def _all_finite(tree: Any) -> bool:
  return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree) if _is_float(x))


def _dtypes(tree: Any) -> Any:
  return jax.tree.map(lambda x: x.dtype, tree)


@_SETTINGS
@hypothesis.given(
  spec=_tree_specs,
  seed=st.integers(0, 2**16),
  n_perturbations=st.sampled_from([1, 2]),
  antithetic=st.booleans(),
  perturbation=st.sampled_from(["gaussian", "rademacher"]),
  langevin_noise=st.sampled_from(["gaussian", "binomial"]),
  weight_decay=st.sampled_from([0.0, 1e-3]),
)
def test_full_loop_on_random_pytrees(
  spec: Any,
  seed: int,
  n_perturbations: int,
  antithetic: bool,
  perturbation: str,
  langevin_noise: str,
  weight_decay: float,
) -> None:
  params = _build(spec, seed)
  tx = fsgld_optax.fsgld(
    0.01, 1e4, weight_decay=weight_decay, key=seed, langevin_noise=langevin_noise
  )  # pyright: ignore[reportArgumentType]
  grad_fn = fsgld_optax.perturbed_value_and_grad(
    _loss,
    n_perturbations=n_perturbations,
    antithetic=antithetic and n_perturbations == 2,
    perturbation=perturbation,  # pyright: ignore[reportArgumentType]
  )

  @jax.jit
  def step(params: Any, opt_state: Any) -> Any:
    loss, grads = grad_fn(params, opt_state, jnp.float32(0.5))
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, grads, updates

  opt_state = tx.init(params)
  new = params
  for _ in range(2):
    new, opt_state, loss, grads, updates = step(new, opt_state)

  structure = jax.tree.structure(params)
  assert jax.tree.structure(grads) == structure
  assert jax.tree.structure(updates) == structure
  assert jax.tree.structure(new) == structure
  assert _dtypes(updates) == _dtypes(params)
  assert _dtypes(new) == _dtypes(params)
  expected_grad_dtypes = jax.tree.map(
    lambda p: p.dtype if _is_float(p) else jax.dtypes.float0, params
  )
  assert _dtypes(grads) == expected_grad_dtypes
  assert loss.dtype == jnp.float32 and bool(jnp.isfinite(loss))
  assert _all_finite(grads) and _all_finite(updates) and _all_finite(new)
  for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(params), strict=True):
    assert a.shape == b.shape
    if not _is_float(b):
      np.testing.assert_array_equal(a, b)
  state = fsgld_optax.find_fsgld_state(opt_state)
  assert int(source_of(state).count) == 2 and bool(jnp.isfinite(source_of(state).sigma))


@_SETTINGS
@hypothesis.given(spec=_tree_specs, seed=st.integers(0, 2**16), with_params=st.booleans())
def test_update_on_random_pytrees(spec: Any, seed: int, with_params: bool) -> None:
  """``update`` alone, eagerly, with gradients of every leaf's own dtype (integer gradients
  are not applied) and with or without ``params``."""
  params = _build(spec, seed)
  grads = _build(spec, seed + 1)
  tx = fsgld_optax.fsgld(0.01, 1e4, key=seed)
  updates, state = tx.update(grads, tx.init(params), params if with_params else None)
  assert jax.tree.structure(updates) == jax.tree.structure(params)
  assert _dtypes(updates) == _dtypes(params)
  assert _all_finite(updates) and int(fsgld_optax.find_fsgld_state(state).count) == 1
  new = optax.apply_updates(params, updates)
  assert _dtypes(new) == _dtypes(params)
  for a, b, u in zip(
    jax.tree.leaves(new), jax.tree.leaves(params), jax.tree.leaves(updates), strict=True
  ):
    if not _is_float(b):
      np.testing.assert_array_equal(a, b)
      assert not np.any(u)
