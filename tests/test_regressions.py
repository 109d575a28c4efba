"""Regression tests: one section per defect found by using the library as its users would.

Each test's docstring names the defect it pins, and fails on version 0.1 (tables of bad
arguments include some that version 0.1 already rejected, to keep the table whole); tests
marked "Guard" check that a fix keeps what already worked. The sections: donated states,
masking, derivatives through the wrapper, argument checks, complex parameters, the saturated
step counter, and serialization of the states.
"""

from __future__ import annotations

import math
import pathlib
import pickle
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _states import at_step

import fsgld_optax
from fsgld_optax import FSGLDState

Factory = Callable[..., optax.GradientTransformation]

# Every member of the family, built from a key; learning rates and β such that the noise
# and the steps are visible in float32.
_MEMBERS: dict[str, Factory] = {
  "fsgld": lambda key: fsgld_optax.fsgld(0.1, 1e4, sigma=0.5, key=key),
  "sgld": lambda key: fsgld_optax.sgld(0.1, 1e4, key=key),
  "fsghmc": lambda key: fsgld_optax.fsghmc(0.1, 1e4, sigma=0.5, key=key),
  "sghmc": lambda key: fsgld_optax.sghmc(0.1, 1e4, key=key),
  "preconditioned_fsgld": lambda key: fsgld_optax.preconditioned_fsgld(
    0.1, 1e4, sigma=0.5, key=key
  ),
  "psgld": lambda key: fsgld_optax.psgld(0.1, 1e4, key=key),
  "rwp": lambda key: optax.chain(fsgld_optax.rwp(0.5, key=key), optax.sgd(0.1)),
  "add_langevin_noise": lambda key: optax.chain(
    optax.sgd(0.1), fsgld_optax.add_langevin_noise(0.1, 1e4, key=key)
  ),
  "scale_by_rms_langevin": lambda key: fsgld_optax.scale_by_rms_langevin(0.1, 1e4, key=key),
}


def _params() -> dict[str, jax.Array]:
  return {"w": jnp.linspace(-1.0, 1.0, 6).reshape(3, 2), "b": jnp.array([0.5, -0.25])}


def _loss(params: Any, x: jax.Array) -> jax.Array:
  return jnp.sum(jnp.sin(x @ params["w"] + params["b"][None, :]) ** 2) + jnp.sum(params["b"] ** 3)


_X = jnp.linspace(-2.0, 2.0, 12).reshape(4, 3)


def _raw(tree: Any) -> list[np.ndarray]:
  """Leaves as NumPy arrays, typed keys as their key data (for bitwise comparisons)."""
  is_key = lambda x: jnp.issubdtype(jnp.asarray(x).dtype, jax.dtypes.prng_key)
  return [np.asarray(jax.random.key_data(x) if is_key(x) else x) for x in jax.tree.leaves(tree)]


def _assert_bitwise_equal(a: Any, b: Any) -> None:
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    x, y = jnp.asarray(x), jnp.asarray(y)
    assert x.dtype == y.dtype
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      assert str(jax.random.key_impl(x)) == str(jax.random.key_impl(y))
  for x, y in zip(_raw(a), _raw(b), strict=True):
    np.testing.assert_array_equal(x, y)


def _with_sigma(opt_state: Any, sigma: Any) -> Any:
  """``opt_state`` with the source's σ replaced by ``sigma`` (which may be traced)."""
  is_source = lambda s: isinstance(s, FSGLDState)
  return jax.tree.map(
    lambda s: s._replace(sigma=sigma) if is_source(s) else s, opt_state, is_leaf=is_source
  )


def _step_fn(tx: optax.GradientTransformation) -> Callable[..., Any]:
  def step(params: Any, opt_state: Any) -> tuple[Any, Any]:
    grads = jax.grad(_loss)(params, _X)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return step


# --- 1. Buffer donation. ----------------------------------------------------------------


def _key_kinds() -> dict[str, Callable[[], Any]]:
  return {
    "typed": lambda: jax.random.key(7),
    "int": lambda: 7,
    "legacy": lambda: jax.random.key_data(jax.random.key(7)),
  }


@pytest.mark.parametrize(
  ("member", "key_kind"),
  [(member, "typed") for member in _MEMBERS] + [("fsgld", "int"), ("fsgld", "legacy")],
)
def test_donating_a_state_leaves_init_other_states_and_the_callers_key_usable(
  member: str, key_kind: str
) -> None:
  """Donation: every ``init`` returns buffers of its own, none shared with the caller's key.

  Version 0.1 stored one key array in every state (the caller's own, for a typed key), so
  after ``jax.jit(step, donate_argnums=(0, 1))`` had donated one state, a second state, a
  later ``tx.init`` and the caller's key failed with "Array has been deleted".
  """
  key = _key_kinds()[key_kind]()
  tx = _MEMBERS[member](key)
  params = _params()
  first, second = tx.init(params), tx.init(params)
  step = jax.jit(_step_fn(tx), donate_argnums=(0, 1))
  step(jax.tree.map(jnp.copy, params), first)
  keys = [x for x in jax.tree.leaves(first) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)]
  assert keys and all(k.is_deleted() for k in keys)  # The donation did delete the keys.
  # The second state, a later init and the caller's key are all intact and usable.
  later = tx.init(params)
  _assert_bitwise_equal(later, second)
  step(jax.tree.map(jnp.copy, params), second)
  step(jax.tree.map(jnp.copy, params), later)
  if isinstance(key, jax.Array):
    assert not key.is_deleted()
    np.testing.assert_array_equal(_raw(key), _raw(_key_kinds()[key_kind]()))


def test_a_second_nnx_optimizer_survives_donating_the_first() -> None:
  """Donation: two ``nnx.Optimizer``s built from one ``tx`` hold buffers of their own.

  Version 0.1 shared the key between them, so donating the first optimizer's state broke the
  second.
  """
  from flax import nnx

  key = jax.random.key(3)
  tx = fsgld_optax.fsgld(0.1, 1e4, key=key)
  model_a = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  model_b = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  opt_a = nnx.Optimizer(model_a, tx, wrt=nnx.Param)
  opt_b = nnx.Optimizer(model_b, tx, wrt=nnx.Param)

  @nnx.jit(donate_argnums=(0, 1))
  def train(model: Any, optimizer: Any, x: jax.Array) -> None:
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
    optimizer.update(model, grads)

  x = jnp.ones((4, 3))
  train(model_a, opt_a, x)
  train(model_b, opt_b, x)  # Failed with "Array has been deleted".
  train(model_a, opt_a, x)
  assert int(opt_a.step[...]) == 2 and int(opt_b.step[...]) == 1
  assert not key.is_deleted()


# --- 2. Masking: the wrapper perturbs exactly the leaves the member sees. -----------------

_MASK_PARAMS = {
  "a": {"x": jnp.arange(3.0), "y": jnp.arange(2.0)},
  "b": jnp.arange(4.0),
  "c": jnp.arange(3),
}


def _perturbed_leaves(tx: optax.GradientTransformation) -> dict[str, Any]:
  """Which leaves of ``_MASK_PARAMS`` the wrapper perturbed, read from the loss's argument."""
  params = _MASK_PARAMS
  loss = lambda p: (sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(p) if x.dtype.kind == "f"), p)
  grad_fn = fsgld_optax.perturbed_value_and_grad(loss, has_aux=True)
  (_, seen), _ = jax.jit(grad_fn)(params, tx.init(params))
  return jax.tree.map(lambda a, b: bool(jnp.any(a != b)), seen, params)


_MASKED_CASES: dict[str, tuple[Callable[[Factory], Any], dict[str, Any]]] = {
  "partition": (
    lambda make: optax.partition(
      {"a": make(0), "b": optax.set_to_zero()}, {"a": {"x": "a", "y": "a"}, "b": "b", "c": "b"}
    ),
    {"a": {"x": True, "y": True}, "b": False, "c": False},
  ),
  "partition_by_function": (
    lambda make: optax.partition(
      {"on": make(0), "off": optax.set_to_zero()},
      lambda p: jax.tree_util.tree_map_with_path(
        lambda path, _: "on" if jax.tree_util.keystr(path) == "['b']" else "off", p
      ),
    ),
    {"a": {"x": False, "y": False}, "b": True, "c": False},
  ),
  "masked_leaves": (
    lambda make: optax.masked(make(0), {"a": {"x": False, "y": True}, "b": True, "c": False}),
    {"a": {"x": False, "y": True}, "b": True, "c": False},
  ),
  "masked_subtree": (
    lambda make: optax.masked(make(0), {"a": False, "b": True, "c": False}),
    {"a": {"x": False, "y": False}, "b": True, "c": False},
  ),
  "masked_callable_in_chain": (
    lambda make: optax.chain(
      optax.clip_by_global_norm(1.0),
      optax.masked(make(0), lambda p: {"a": {"x": True, "y": False}, "b": False, "c": False}),
    ),
    {"a": {"x": True, "y": False}, "b": False, "c": False},
  ),
}

_MASKED_MEMBERS: dict[str, Factory] = {
  "fsgld": lambda key: fsgld_optax.fsgld(0.1, 1e4, sigma=0.5, key=key),
  "fsghmc": lambda key: fsgld_optax.fsghmc(0.1, 1e4, sigma=0.5, key=key),
  "rwp": lambda key: optax.chain(fsgld_optax.rwp(0.5, key=key), optax.sgd(0.1)),
}


@pytest.mark.parametrize(
  ("case", "member"),
  [(case, "fsgld") for case in _MASKED_CASES]
  + [(case, member) for case in ("partition", "masked_subtree") for member in ("fsghmc", "rwp")],
)
def test_the_wrapper_perturbs_exactly_the_leaves_the_member_sees(member: str, case: str) -> None:
  """Masking: under ``optax.masked``/``optax.partition`` only the member's leaves are perturbed.

  Version 0.1 perturbed every floating leaf, including those the masked or partitioned
  member never updates (which then took their gradient at perturbed weights of a
  differently-optimised leaf). The leaves are found from the state, with no extra argument.
  """
  build, expected = _MASKED_CASES[case]
  assert _perturbed_leaves(build(_MASKED_MEMBERS[member])) == expected


def test_masked_perturbations_equal_the_unmasked_ones_on_the_seen_leaves() -> None:
  """Masking: the seen leaves get the same ε as without the mask (same key, same step)."""
  params = _MASK_PARAMS
  loss = lambda p: (jnp.sum(jnp.sin(p["b"])), p)
  grad_fn = jax.jit(fsgld_optax.perturbed_value_and_grad(loss, has_aux=True))
  mask = {"a": False, "b": True, "c": False}
  masked = optax.masked(fsgld_optax.fsgld(0.1, 1e4, sigma=0.5, key=0), mask)
  plain = fsgld_optax.fsgld(0.1, 1e4, sigma=0.5, key=0)
  (_, seen_masked), _ = grad_fn(params, masked.init(params))
  (_, seen_plain), _ = grad_fn(params, plain.init(params))
  np.testing.assert_array_equal(seen_masked["b"], seen_plain["b"])
  assert not np.array_equal(seen_plain["a"]["x"], params["a"]["x"])
  np.testing.assert_array_equal(seen_masked["a"]["x"], params["a"]["x"])


@pytest.mark.parametrize(
  "params",
  [
    {"a": _MASK_PARAMS["a"], "b": _MASK_PARAMS["b"]},  # A leaf missing.
    {**_MASK_PARAMS, "d": jnp.zeros(2)},  # A leaf too many.
    {**_MASK_PARAMS, "b": {"u": jnp.zeros(4), "v": jnp.zeros(1)}},  # A leaf become a subtree.
    [_MASK_PARAMS["a"], _MASK_PARAMS["b"], _MASK_PARAMS["c"]],  # Another container.
  ],
  ids=["missing", "extra", "deeper", "container"],
)
def test_params_that_do_not_match_the_state_are_an_error(params: Any) -> None:
  """Masking: params whose structure differs from the state's are a clear error.

  Finding the seen leaves from the state needs the params to be those given to
  ``tx.init``; a mismatch must not silently perturb the wrong leaves.
  """
  tx = optax.masked(
    fsgld_optax.fsgld(0.1, 1e4, sigma=0.5, key=0), {"a": False, "b": True, "c": False}
  )
  opt_state = tx.init(_MASK_PARAMS)
  loss = lambda p: sum(jnp.sum(x) for x in jax.tree.leaves(p) if x.dtype.kind == "f")
  with pytest.raises(ValueError, match=r"tx\.init"):
    fsgld_optax.perturbed_value_and_grad(loss)(params, opt_state)


# --- 3. Derivatives through the wrapper. -------------------------------------------------


def _epsilons(grad_options: dict[str, Any], opt_state: Any) -> Any:
  """The perturbations ε_i the wrapper draws at ``opt_state``, stacked (read from aux).

  ``perturbation_batch_size`` does not change the draws, so they are read without it.
  """
  options = {k: v for k, v in grad_options.items() if k != "perturbation_batch_size"}
  if options.get("n_perturbations", 1) > 1:
    options["aux_reduction"] = "stack"
  grad_fn = fsgld_optax.perturbed_value_and_grad(
    lambda p, x: (_loss(p, x), p), has_aux=True, **options
  )
  params = _params()
  (_, perturbed), _ = jax.jit(grad_fn)(params, opt_state, _X)
  if grad_options.get("n_perturbations", 1) == 1:
    perturbed = jax.tree.map(lambda x: x[None], perturbed)
  return jax.tree.map(lambda q, p: q - p[None], perturbed, params)


def _mean_over(eps: Any, fn: Callable[[Any, int], Any]) -> Any:
  n = jax.tree.leaves(eps)[0].shape[0]
  terms = [fn(jax.tree.map(lambda e, i=i: e[i], eps), i) for i in range(n)]
  return jax.tree.map(lambda *t: sum(t) / n, *terms)


_GRAD_OPTIONS = {
  "n1": {},
  "n2": {"n_perturbations": 2},
  "n4_groups": {"n_perturbations": 4, "perturbation_batch_size": 2, "antithetic": True},
  "rademacher": {"n_perturbations": 2, "perturbation": "rademacher"},
}


@pytest.mark.parametrize("options", list(_GRAD_OPTIONS))
def test_grad_of_the_returned_value_is_the_mean_gradient_at_the_perturbed_points(
  options: str,
) -> None:
  """Derivatives: ``jax.grad`` of the returned value is ``mean_i ∇U(θ + ε_i)``, not zero.

  Version 0.1 bit-cast the perturbed weights to integers and back (``materialize``), which cut
  every derivative: this gradient came out as 0.
  """
  grad_options = _GRAD_OPTIONS[options]
  opt_state = fsgld_optax.fsgld(0.1, 1e4, sigma=0.3, key=0).init(_params())
  grad_fn = fsgld_optax.perturbed_value_and_grad(_loss, **grad_options)
  params = _params()
  got = jax.jit(jax.grad(lambda p: grad_fn(p, opt_state, _X)[0]))(params)
  eps = _epsilons(grad_options, opt_state)
  add = lambda e: jax.tree.map(jnp.add, params, e)
  want = _mean_over(eps, lambda e, _: jax.grad(_loss)(add(e), _X))
  returned = jax.jit(grad_fn)(params, opt_state, _X)[1]
  for g, w, r in zip(
    jax.tree.leaves(got), jax.tree.leaves(want), jax.tree.leaves(returned), strict=True
  ):
    assert float(jnp.max(jnp.abs(w))) > 0.1
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options", ["n1", "n2", "n4_groups"])
def test_jvp_of_the_returned_gradient_is_a_hessian_vector_product_at_the_perturbed_points(
  options: str,
) -> None:
  """Derivatives: ``jax.jvp`` of the returned gradient is ``mean_i ∇²U(θ + ε_i) v``.

  Compared with ``jax.jvp(jax.grad(loss))`` at θ + ε_i with the same ε_i. Version 0.1 gave 0.
  """
  grad_options = _GRAD_OPTIONS[options]
  opt_state = fsgld_optax.fsgld(0.1, 1e4, sigma=0.3, key=1).init(_params())
  grad_fn = fsgld_optax.perturbed_value_and_grad(_loss, **grad_options)
  params = _params()
  v = jax.tree.map(lambda p: jnp.cos(jnp.arange(p.size, dtype=p.dtype)).reshape(p.shape), params)
  _, got = jax.jit(lambda p, t: jax.jvp(lambda q: grad_fn(q, opt_state, _X)[1], (p,), (t,)))(
    params, v
  )
  eps = _epsilons(grad_options, opt_state)
  hvp = lambda q: jax.jvp(lambda r: jax.grad(_loss)(r, _X), (q,), (v,))[1]
  want = _mean_over(eps, lambda e, _: hvp(jax.tree.map(jnp.add, params, e)))
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    assert float(jnp.max(jnp.abs(w))) > 0.1
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("options", ["n1", "n2", "n4_groups"])
def test_derivative_with_respect_to_sigma_is_the_mean_of_grad_dot_epsilon(options: str) -> None:
  r"""Derivatives: d/dσ of the returned value is ``mean_i ⟨∇U(θ + σ z_i), z_i⟩``, ε_i = σ z_i.

  σ enters through a state whose ``sigma`` is a traced input. Version 0.1 gave 0.
  """
  grad_options = _GRAD_OPTIONS[options]
  sigma = 0.3
  opt_state = fsgld_optax.fsgld(0.1, 1e4, sigma=sigma, key=2).init(_params())
  grad_fn = fsgld_optax.perturbed_value_and_grad(_loss, **grad_options)
  params = _params()
  value_at = jax.jit(lambda s: grad_fn(params, _with_sigma(opt_state, s), _X)[0])
  got = jax.jit(jax.grad(value_at))(jnp.float32(sigma))
  z = jax.tree.map(lambda e: e / sigma, _epsilons(grad_options, opt_state))

  def directional(zi: Any, _: int) -> jax.Array:
    g = jax.grad(_loss)(jax.tree.map(lambda p, e: p + sigma * e, params, zi), _X)
    return sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(zi), strict=True))

  want = _mean_over(z, directional)
  assert abs(float(want)) > 0.1
  np.testing.assert_allclose(got, want, rtol=1e-4)
  # And a central finite difference agrees (float32: step 1e-2, tolerance from its O(h²) error).
  h = 1e-2
  finite = (value_at(jnp.float32(sigma + h)) - value_at(jnp.float32(sigma - h))) / (2 * h)
  np.testing.assert_allclose(got, finite, rtol=2e-2)


# --- 5. Argument checks: errors that name the argument, at construction. -------------------

_SCHEDULABLE = {"learning_rate", "beta", "sigma"}
# Values that are not a real scalar: each must be rejected wherever a float is required.
_NOT_A_FLOAT: dict[str, Any] = {
  "bool_true": True,
  "bool_false": False,
  "numpy_bool": np.bool_(True),
  "string": "0.5",
  "bytes": b"0.5",
  "none": None,
  "callable": lambda count: 0.5,
  "complex": 0.5 + 0j,
  "numpy_complex": np.complex64(0.5),
  "array": jnp.full(2, 0.5),
  "list": [0.5],
  "nan": math.nan,
  "overflows_float32": 1e39,
}
# A negative value of every real dtype, in particular 16-bit floats.
_NEGATIVE: dict[str, Any] = {
  "bfloat16": jnp.bfloat16(-1),
  "float16": jnp.float16(-1),
  "numpy_float16": np.float16(-1),
  "int": -1,
  "float": -1.0,
}
_FACTORY_ARGS: dict[str, tuple[Factory, tuple[str, ...]]] = {
  "fsgld": (
    lambda **kw: fsgld_optax.fsgld(**{"learning_rate": 0.1, "beta": 1e4, "key": 0, **kw}),
    ("learning_rate", "beta", "sigma", "eta", "weight_decay"),
  ),
  "sgld": (
    lambda **kw: fsgld_optax.sgld(**{"learning_rate": 0.1, "beta": 1e4, "key": 0, **kw}),
    ("learning_rate", "beta", "weight_decay"),
  ),
  "fsghmc": (
    lambda **kw: fsgld_optax.fsghmc(**{"learning_rate": 0.1, "beta": 1e4, "key": 0, **kw}),
    ("learning_rate", "beta", "momentum", "sigma", "eta", "weight_decay"),
  ),
  "sghmc": (
    lambda **kw: fsgld_optax.sghmc(**{"learning_rate": 0.1, "beta": 1e4, "key": 0, **kw}),
    ("learning_rate", "beta", "momentum", "weight_decay"),
  ),
  "preconditioned_fsgld": (
    lambda **kw: fsgld_optax.preconditioned_fsgld(
      **{"learning_rate": 0.1, "beta": 1e4, "key": 0, **kw}
    ),
    ("learning_rate", "beta", "decay", "eps", "initial_scale", "sigma", "eta", "weight_decay"),
  ),
  "psgld": (
    lambda **kw: fsgld_optax.psgld(**{"learning_rate": 0.1, "beta": 1e4, "key": 0, **kw}),
    ("learning_rate", "beta", "decay", "eps", "initial_scale", "weight_decay"),
  ),
  "rwp": (lambda **kw: fsgld_optax.rwp(**{"sigma": 0.1, "key": 0, **kw}), ("sigma",)),
  "add_langevin_noise": (
    lambda **kw: fsgld_optax.add_langevin_noise(
      **{"learning_rate": 0.1, "beta": 1e4, "key": 0, **kw}
    ),
    ("learning_rate", "beta", "friction"),
  ),
  "scale_by_rms_langevin": (
    lambda **kw: fsgld_optax.scale_by_rms_langevin(
      **{"learning_rate": 0.1, "beta": 1e4, "key": 0, **kw}
    ),
    ("learning_rate", "beta", "decay", "eps", "initial_scale"),
  ),
}


def _bad_float_cases() -> list[Any]:
  cases = []
  for factory, (_, names) in _FACTORY_ARGS.items():
    for name in names:
      for label in _NOT_A_FLOAT:
        schedule = label == "callable" and name in _SCHEDULABLE
        coupled = label == "none" and name == "sigma"  # sigma=None couples σ to β.
        if not (schedule or coupled):
          cases.append(pytest.param(factory, name, label, id=f"{factory}-{name}-{label}"))
  return cases


def _raises_naming(name: str, call: Callable[[], Any]) -> None:
  with pytest.raises((ValueError, TypeError)) as info:
    call()
  assert name in str(info.value), f"the error does not name {name}: {info.value}"


@pytest.mark.parametrize(("factory", "name", "label"), _bad_float_cases())
def test_every_float_hyperparameter_rejects_what_is_not_a_real_scalar(
  factory: str, name: str, label: str
) -> None:
  """Validation: booleans, strings, None, callables, complex, arrays, NaN, overflow.

  Version 0.1 let ``beta=False`` through (an inf noise scale), ``learning_rate="-1"`` (NaN),
  ``weight_decay=<callable>`` (a bare TypeError at update) and λ = 1e39 (inf in float32).
  """
  build, _ = _FACTORY_ARGS[factory]
  _raises_naming(name, lambda: build(**{name: _NOT_A_FLOAT[label]}))


@pytest.mark.parametrize("label", list(_NEGATIVE))
@pytest.mark.parametrize(
  ("factory", "name"),
  [(f, n) for f, (_, names) in _FACTORY_ARGS.items() for n in names],
)
def test_every_hyperparameter_rejects_a_negative_value_of_any_dtype(
  factory: str, name: str, label: str
) -> None:
  """Validation: a negative bf16/f16 scalar is checked like a float.

  Version 0.1 skipped 16-bit floats: a negative bf16 λ gave NaN updates and
  ``eta=jnp.bfloat16(-1)`` was accepted.
  """
  build, _ = _FACTORY_ARGS[factory]
  _raises_naming(name, lambda: build(**{name: _NEGATIVE[label]}))


@pytest.mark.parametrize(
  ("factory", "name", "value"),
  [
    ("fsghmc", "momentum", 1.0),
    ("fsghmc", "momentum", 1.5),
    ("sghmc", "momentum", 1.0),
    ("preconditioned_fsgld", "decay", 1.0),
    ("psgld", "decay", 2.0),
    ("scale_by_rms_langevin", "decay", 1.0),
    ("preconditioned_fsgld", "eps", 0.0),
    ("psgld", "eps", 0.0),
    ("scale_by_rms_langevin", "eps", -1e-8),
    ("add_langevin_noise", "friction", 0.0),
    ("add_langevin_noise", "friction", 1.5),
    ("fsgld", "eta", 0.0),
    ("fsgld", "beta", 0.0),
    ("fsgld", "sigma", math.inf),
    ("fsgld", "learning_rate", math.inf),
    ("fsgld", "weight_decay", math.inf),
    ("fsgld", "learning_rate", "-1"),
    ("fsgld", "beta", False),
    ("fsgld", "eta", jnp.bfloat16(-1)),
    ("fsgld", "weight_decay", lambda count: 0.0),
    ("fsgld", "learning_rate", 1e39),
  ],
)
def test_out_of_range_hyperparameters_are_rejected(factory: str, name: str, value: Any) -> None:
  """Validation: momentum ≥ 1, decay ≥ 1, eps ≤ 0 and the reported reproductions."""
  build, _ = _FACTORY_ARGS[factory]
  _raises_naming(name, lambda: build(**{name: value}))


@pytest.mark.parametrize(
  "key", [2**63, -(2**63) - 1, True, np.bool_(False), None, "0", 1.5, 0.5 + 0j, jnp.bfloat16(1)]
)
@pytest.mark.parametrize("factory", list(_FACTORY_ARGS))
def test_bad_keys_are_rejected_naming_key(factory: str, key: Any) -> None:
  """Validation: ``key=2**63`` raised a bare OverflowError in version 0.1."""
  build, _ = _FACTORY_ARGS[factory]
  _raises_naming("key", lambda: build(key=key))


@pytest.mark.parametrize(
  ("factory", "argument"),
  [
    ("fsgld", "langevin_noise"),
    ("fsghmc", "langevin_noise"),
    ("preconditioned_fsgld", "langevin_noise"),
    ("add_langevin_noise", "distribution"),
    ("scale_by_rms_langevin", "distribution"),
  ],
)
@pytest.mark.parametrize("value", ["cauchy", None, 1])
def test_an_unknown_noise_distribution_is_rejected_naming_the_argument(
  factory: str, argument: str, value: Any
) -> None:
  """Validation: the error names the argument the caller passed."""
  build, _ = _FACTORY_ARGS[factory]
  _raises_naming(argument, lambda: build(**{argument: value}))


def test_coupled_sigma_accepts_arrays_as_its_docstring_promises() -> None:
  """Validation: ``coupled_sigma`` takes arrays of β and η, broadcast against each other."""
  beta = np.array([1e4, 1e8, np.inf])
  eta = np.array([[0.1], [0.01]])
  got = fsgld_optax.coupled_sigma(jnp.asarray(beta), jnp.asarray(eta))
  assert got.shape == (2, 3)
  np.testing.assert_allclose(got, beta[None, :] ** (-(1 + eta) / 4), rtol=1e-6)
  np.testing.assert_allclose(
    fsgld_optax.coupled_sigma([1e4, 1e8], 0.1), [1e4 ** (-1.1 / 4), 1e8 ** (-1.1 / 4)], rtol=1e-6
  )
  # Traced β (under jit and vmap) passes unchecked.
  traced = jax.jit(jax.vmap(fsgld_optax.coupled_sigma, in_axes=(0, None)))(beta[:2], 0.1)
  np.testing.assert_allclose(traced, beta[:2] ** (-1.1 / 4), rtol=1e-6)


@pytest.mark.parametrize(
  ("name", "beta", "eta"),
  [
    ("beta", jnp.array([1e4, -1.0]), 0.1),
    ("beta", jnp.array([1e4, jnp.nan]), 0.1),
    ("beta", jnp.array([1e4, 0.0]), 0.1),
    ("beta", jnp.array([True]), 0.1),
    ("beta", np.array([1e4 + 0j]), 0.1),
    ("beta", np.array(["1e4"]), 0.1),
    ("beta", [1e4, 1e39], 0.1),
    ("beta", None, 0.1),
    ("beta", jnp.bfloat16(-1), 0.1),
    ("eta", 1e4, jnp.array([0.1, -0.1])),
    ("eta", 1e4, math.inf),
    ("eta", 1e4, False),
    ("eta", jnp.ones(2), jnp.ones(3)),
  ],
)
def test_coupled_sigma_rejects_bad_entries_naming_the_argument(
  name: str, beta: Any, eta: Any
) -> None:
  """Validation: a bad entry of ``beta`` or ``eta`` (or shapes that do not broadcast)."""
  _raises_naming(name, lambda: fsgld_optax.coupled_sigma(beta, eta))


@pytest.mark.parametrize(
  ("name", "kwargs"),
  [
    ("init_value", {"init_value": -0.1}),
    ("init_value", {"init_value": jnp.bfloat16(-1)}),
    ("init_value", {"init_value": "0.1"}),
    ("init_value", {"init_value": True}),
    ("init_value", {"init_value": None}),
    ("init_value", {"init_value": math.nan}),
    ("init_value", {"init_value": math.inf}),
    ("init_value", {"init_value": 1e39}),
    ("init_value", {"init_value": jnp.ones(2)}),
    ("init_value", {"init_value": 0.1 + 0j}),
    ("init_value", {"init_value": optax.constant_schedule(0.1)}),
    ("total_steps", {"total_steps": True, "num_cycles": 1}),
    ("total_steps", {"total_steps": 100.0}),
    ("total_steps", {"total_steps": 3}),
    ("num_cycles", {"num_cycles": True}),
    ("num_cycles", {"num_cycles": 0}),
    ("num_cycles", {"num_cycles": 2.0}),
  ],
)
def test_cyclical_cosine_schedule_checks_every_argument(name: str, kwargs: dict[str, Any]) -> None:
  """Validation: version 0.1 accepted a negative, NaN, boolean or array ``init_value``."""
  arguments = {"init_value": 0.1, "total_steps": 100, "num_cycles": 4, **kwargs}
  _raises_naming(name, lambda: fsgld_optax.cyclical_cosine_schedule(**arguments))


def test_cyclical_cosine_schedule_accepts_numpy_integers_and_16_bit_floats() -> None:
  """Validation: NumPy integer counts and a bf16 λ₀ are valid (and give float32 values)."""
  schedule = fsgld_optax.cyclical_cosine_schedule(jnp.bfloat16(0.5), np.int64(100), np.int32(4))
  reference = fsgld_optax.cyclical_cosine_schedule(0.5, 100, 4)
  for count in (0, 7, 24, 25, 99):
    assert schedule(count).dtype == jnp.float32
    np.testing.assert_array_equal(schedule(count), reference(count))


@pytest.mark.parametrize(
  ("name", "kwargs"),
  [
    ("num_samples", {"num_samples": True}),
    ("num_samples", {"num_samples": 0}),
    ("num_samples", {"num_samples": 2.0}),
    ("thinning", {"thinning": True}),
    ("thinning", {"thinning": 0}),
    ("burn_in", {"burn_in": True}),
    ("burn_in", {"burn_in": -1}),
    ("burn_in", {"burn_in": 1.0}),
    ("loss_fn", {"loss_fn": 3.0}),
    ("tx", {"tx": "sgld"}),
    ("n_perturbations", {"n_perturbations": 0}),
  ],
)
def test_sample_checks_every_argument(name: str, kwargs: dict[str, Any]) -> None:
  """Validation: version 0.1 accepted ``num_samples=True``, ``burn_in=True``, ``thinning=True``."""
  arguments = {
    "loss_fn": lambda x: jnp.sum(x**2),
    "params": jnp.zeros(2),
    "tx": fsgld_optax.sgld(0.1, 1e4, key=0),
    "num_samples": 2,
    **kwargs,
  }
  _raises_naming(name, lambda: fsgld_optax.sample(**arguments))


def test_sample_accepts_numpy_integer_counts() -> None:
  """Validation: NumPy integers are valid counts and give the same chain as Python ints."""
  tx = fsgld_optax.sgld(0.1, 1e4, key=0)
  loss_fn = lambda x: jnp.sum(x**2)
  got, _, _ = fsgld_optax.sample(
    loss_fn, jnp.ones(2), tx, num_samples=np.int64(3), thinning=np.int32(2), burn_in=np.int64(1)
  )
  want, _, _ = fsgld_optax.sample(loss_fn, jnp.ones(2), tx, num_samples=3, thinning=2, burn_in=1)
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("member", list(_MEMBERS))
def test_a_gradient_leaf_of_another_shape_is_an_error_naming_the_leaf(member: str) -> None:
  """Validation: a gradient of shape (1, 2) for a (3, 2) parameter is no silent broadcast.

  Version 0.1 broadcast it into the update.
  """
  tx = _MEMBERS[member](0)
  params = _params()
  grads = {"w": jnp.ones((1, 2)), "b": jnp.ones(2)}
  with pytest.raises(ValueError, match=r"\['w'\]"):
    tx.update(grads, tx.init(params), params)


# --- 6. Complex parameters are rejected. ---------------------------------------------------


@pytest.mark.parametrize("member", [*_MEMBERS, "masked_fsgld"])
def test_complex_parameters_are_rejected_at_init_naming_the_leaf(member: str) -> None:
  """Complex parameters: rejected at ``init`` with an error naming the leaf.

  Version 0.1 accepted them and drew noise of variance λ/β per real coordinate instead of
  2λ/β (a complex normal has variance 1 in total). The docstrings say they are rejected.
  """
  if member == "masked_fsgld":
    tx = optax.masked(fsgld_optax.fsgld(0.1, 1e4, key=0), {"w": True, "z": True})
  else:
    tx = _MEMBERS[member](0)
  params = {"w": jnp.ones(3), "z": jnp.ones(2, jnp.complex64)}
  with pytest.raises(ValueError, match=r"complex.*\['z'\]"):
    tx.init(params)


def test_a_complex_leaf_masked_out_of_the_member_is_allowed() -> None:
  """Guard, complex parameters: a leaf the member does not see is another optimizer's."""
  tx = optax.masked(fsgld_optax.fsgld(0.1, 1e4, key=0), {"w": True, "z": False})
  params = {"w": jnp.ones(3), "z": jnp.ones(2, jnp.complex64)}
  updates, _ = tx.update({"w": jnp.ones(3), "z": jnp.ones(2, jnp.complex64)}, tx.init(params))
  np.testing.assert_array_equal(updates["z"], jnp.ones(2, jnp.complex64))


# --- 7. The step counter saturates; the noise stays fresh. --------------------------------

_COUNT_MAX = 2**31 - 1

_SATURATING: dict[str, Factory] = {
  "fsgld": lambda key: fsgld_optax.fsgld(0.1, 1e4, sigma=0.5, key=key),
  "fsghmc": lambda key: fsgld_optax.fsghmc(0.1, 1e4, momentum=0.0, sigma=0.5, key=key),
  "preconditioned_fsgld": lambda key: fsgld_optax.preconditioned_fsgld(
    0.1, 1e4, decay=0.0, sigma=0.5, key=key
  ),
}


def _draws(
  tx: optax.GradientTransformation, opt_state: Any, steps: int
) -> tuple[np.ndarray, np.ndarray, list[int], Any]:
  """ε and ξ (up to a constant scale) of ``steps`` steps from ``opt_state``, and the state.

  The loss is flat (its gradient is 0), so the update is the Langevin noise alone, with a
  constant scale for each member built in ``_SATURATING``.
  """
  params = _params()
  flat = lambda p: (0.0 * sum(jnp.sum(x) for x in jax.tree.leaves(p)), p)
  grad_fn = fsgld_optax.perturbed_value_and_grad(flat, has_aux=True)

  @jax.jit
  def step(opt_state: Any) -> tuple[Any, Any, Any]:
    (_, perturbed), grads = grad_fn(params, opt_state)
    updates, opt_state = tx.update(grads, opt_state, params)
    eps = jax.tree.map(jnp.subtract, perturbed, params)
    return eps, updates, opt_state

  eps, xi, counts = [], [], []
  for _ in range(steps):
    e, x, opt_state = step(opt_state)
    eps.append(np.concatenate([np.ravel(v) for v in jax.tree.leaves(e)]))
    xi.append(np.concatenate([np.ravel(v) for v in jax.tree.leaves(x)]))
    counts.append(int(fsgld_optax.find_fsgld_state(opt_state).count))
  return np.stack(eps), np.stack(xi), counts, opt_state


def _all_distinct(rows: np.ndarray) -> bool:
  return all(
    not np.any(rows[i] == rows[j]) for i in range(len(rows)) for j in range(i + 1, len(rows))
  )


@pytest.mark.parametrize("member", list(_SATURATING))
def test_draws_stay_fresh_after_the_step_counter_saturates(member: str) -> None:
  """Saturation: from count 2³¹ − 3, five steps draw five different ε and five different ξ.

  ``count`` saturates at 2³¹ − 1 (schedules stay at their last value); version 0.1 then
  drew the same ε and ξ at every step.
  """
  tx = _SATURATING[member](0)
  opt_state = at_step(tx.init(_params()), _COUNT_MAX - 2)
  eps, xi, counts, final = _draws(tx, opt_state, 5)
  assert counts == [_COUNT_MAX - 1, _COUNT_MAX, _COUNT_MAX, _COUNT_MAX, _COUNT_MAX]
  assert np.all(eps != 0) and np.all(xi != 0)
  assert _all_distinct(eps), "ε repeats"
  assert _all_distinct(xi), "ξ repeats"
  # Every counter in the state saturates with the source's (none wraps round to negative).
  counted = lambda x: "count" in getattr(x, "_fields", ())
  counters = [int(s.count) for s in jax.tree.leaves(final, is_leaf=counted) if counted(s)]
  assert len(counters) >= 2 and all(c == _COUNT_MAX for c in counters)


def test_below_saturation_the_key_never_changes() -> None:
  """Guard, saturation: below 2³¹ − 1 the key never changes, so checkpoints are unchanged."""
  tx = _SATURATING["fsgld"](jax.random.key(5))
  start = tx.init(_params())
  *_, end = _draws(tx, start, 3)
  _assert_bitwise_equal(
    fsgld_optax.find_fsgld_state(end).rng_key, fsgld_optax.find_fsgld_state(start).rng_key
  )


# --- 8. Serialization: flax.serialization, pickle and orbax, bitwise. --------------------

_SERIALIZED: dict[str, Factory] = {
  "fsgld": lambda key: fsgld_optax.fsgld(
    optax.cosine_decay_schedule(0.1, 10), 1e4, weight_decay=1e-3, key=key
  ),
  "fsghmc": lambda key: fsgld_optax.fsghmc(0.1, 1e4, key=key),
  "psgld": lambda key: fsgld_optax.psgld(0.1, 1e4, key=key),
  "rwp_adam": lambda key: optax.chain(fsgld_optax.rwp(0.1, key=key), optax.adam(1e-2)),
}


def _perturbed_step_fn(tx: optax.GradientTransformation) -> Callable[..., Any]:
  grad_fn = fsgld_optax.perturbed_value_and_grad(_loss)

  @jax.jit
  def step(params: Any, opt_state: Any) -> tuple[Any, Any]:
    _, grads = grad_fn(params, opt_state, _X)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return step


def _run(step: Callable[..., Any], params: Any, opt_state: Any, steps: int) -> tuple[Any, Any]:
  for _ in range(steps):
    params, opt_state = step(params, opt_state)
  return params, opt_state


def _round_trip(how: str, state: Any, target: Any, tmp_path: pathlib.Path) -> Any:
  """``state`` saved and restored ``how``, into the structure of ``target``."""
  from flax import serialization

  if how == "to_bytes":
    return serialization.from_bytes(target, serialization.to_bytes(state))
  if how == "msgpack":
    data = serialization.msgpack_serialize(serialization.to_state_dict(state))
    return serialization.from_state_dict(target, serialization.msgpack_restore(data))
  if how == "pickle":
    return pickle.loads(pickle.dumps(state))
  import orbax.checkpoint as ocp

  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(tmp_path / "state", state)
    checkpointer.wait_until_finished()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    return checkpointer.restore(tmp_path / "state", abstract)


_HOWS = ["to_bytes", "msgpack", "pickle", "orbax"]


@pytest.mark.parametrize(
  ("member", "impl"),
  [(m, "threefry2x32") for m in _SERIALIZED] + [("fsgld", "rbg")],
)
def test_states_round_trip_bitwise_and_resume_the_same_run(
  member: str, impl: str, tmp_path: pathlib.Path
) -> None:
  """Serialization: flax.serialization, pickle and orbax restore the state bitwise.

  Version 0.1's ``flax.serialization.to_bytes``/``msgpack_serialize`` failed on the typed key
  ("JAX array with PRNGKey dtype cannot be converted"). A run resumed from each restored
  state equals the uninterrupted run, bitwise.
  """
  tx = _SERIALIZED[member](jax.random.key(11, impl=impl))
  step = _perturbed_step_fn(tx)
  params = _params()
  reference = _run(step, params, tx.init(params), 5)
  params, opt_state = _run(step, params, tx.init(params), 2)
  for how in _HOWS:
    restored = _round_trip(how, opt_state, tx.init(_params()), tmp_path / how)
    _assert_bitwise_equal(restored, opt_state)
    _assert_bitwise_equal(_run(step, params, restored, 3), reference)


def test_a_linen_train_state_holding_the_optimizer_round_trips(tmp_path: pathlib.Path) -> None:
  """Serialization: a Linen ``TrainState`` with an fSGLD state saves with ``to_bytes``.

  Linen users checkpoint their ``TrainState`` this way; version 0.1 failed on the typed key.
  """
  from flax import linen as nn
  from flax import serialization
  from flax.training import train_state

  model = nn.Dense(2)
  x = jnp.ones((4, 3))
  variables = model.init(jax.random.key(0), x)
  tx = fsgld_optax.fsgld(0.1, 1e4, key=jax.random.key(3))
  state = train_state.TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx)
  grad_fn = fsgld_optax.perturbed_value_and_grad(
    lambda p, x: jnp.sum(state.apply_fn({"params": p}, x) ** 2)
  )
  _, grads = grad_fn(state.params, state.opt_state, x)
  state = state.apply_gradients(grads=grads)
  template = train_state.TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx)
  restored = serialization.from_bytes(template, serialization.to_bytes(state))
  _assert_bitwise_equal(
    (restored.step, restored.params, restored.opt_state),
    (state.step, state.params, state.opt_state),
  )


def test_saturated_states_round_trip_and_resume_the_same_run(tmp_path: pathlib.Path) -> None:
  """Saturation and serialization: a state whose key has ratcheted restores bitwise."""
  tx = _SATURATING["fsgld"](jax.random.key(13))
  step = _perturbed_step_fn(tx)
  params = _params()
  start = at_step(tx.init(params), _COUNT_MAX - 1)
  reference = _run(step, params, start, 5)
  params, opt_state = _run(step, params, start, 2)
  source, initial = (fsgld_optax.find_fsgld_state(s) for s in (opt_state, start))
  assert int(source.count) == _COUNT_MAX
  assert not np.array_equal(_raw(source.rng_key), _raw(initial.rng_key))  # It has ratcheted.
  for how in _HOWS:
    restored = _round_trip(how, opt_state, tx.init(_params()), tmp_path / how)
    _assert_bitwise_equal(restored, opt_state)
    _assert_bitwise_equal(_run(step, params, restored, 3), reference)


def test_flax_serialization_works_when_flax_is_imported_after_the_optimizer() -> None:
  """Serialization: the typed key is registered however the imports are ordered.

  ``import fsgld_optax`` alone does not import flax; building an optimizer registers the key
  type with ``flax.serialization`` (importing it if flax is installed).
  """
  code = (
    "import sys, jax.numpy as jnp, fsgld_optax\n"
    "assert 'flax' not in sys.modules\n"
    "tx = fsgld_optax.sgld(0.1, 1e4, key=0)\n"
    "state = tx.init(jnp.ones(2))\n"
    "from flax import serialization\n"
    "restored = serialization.from_bytes(state, serialization.to_bytes(state))\n"
    "print(fsgld_optax.find_fsgld_state(restored).rng_key.dtype)\n"
  )
  result = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "key<fry>"


# The wrapper's options (v0.1 accepted the flags, axis_name and batch_argnums of any type).
_BAD_WRAPPER_OPTIONS = [
  ("n_perturbations", True, None),
  ("n_perturbations", 0, None),
  ("n_perturbations", 2.0, None),
  ("n_perturbations", "2", None),
  ("n_perturbations", None, None),
  ("perturbation", "cauchy", None),
  ("perturbation", None, None),
  ("perturbation_batch_size", True, None),
  ("perturbation_batch_size", 0, None),
  ("perturbation_batch_size", 3, None),
  ("perturbation_batch_size", 2.0, None),
  ("perturbation_scale", "none", None),
  ("perturbation_scale", None, None),
  ("aux_reduction", "sum", None),
  ("aux_reduction", {"a": "bad"}, None),
  ("has_aux", "yes", None),
  ("has_aux", None, None),
  ("split_batch", 1, None),
  ("split_batch", "yes", None),
  ("antithetic", None, None),
  ("per_device_perturbations", "yes", None),
  ("axis_name", 1, None),
  ("axis_name", ["i"], None),
  ("axis_name", True, None),
  ("batch_argnums", "0", None),
  ("batch_argnums", 1.5, None),
  ("batch_argnums", True, None),
  ("batch_argnums", [0, "a"], None),
]


@pytest.mark.parametrize(
  ("name", "value"),
  [
    pytest.param(name, value, marks=() if mark is None else (mark,), id=f"{name}-{value!r}")
    for name, value, mark in _BAD_WRAPPER_OPTIONS
  ],
)
def test_the_wrapper_checks_every_option_at_construction(name: str, value: Any) -> None:
  """Validation: each option of ``perturbed_value_and_grad`` is checked when it is called."""
  options: dict[str, Any] = {"n_perturbations": 4, name: value}
  if name == "per_device_perturbations":
    options["axis_name"] = "i"
  _raises_naming(name, lambda: fsgld_optax.perturbed_value_and_grad(_loss, **options))


def test_the_validation_helpers_for_the_wrapper_options() -> None:
  """Validation: the checks the wrapper's boolean, axis and argnums options need."""
  from fsgld_optax import _validation

  for good in (True, False, np.bool_(True)):
    _validation.check_bool("flag", good)
  for bad in ("yes", 1, None, 0.0):
    _raises_naming("flag", lambda bad=bad: _validation.check_bool("flag", bad))
  for good in (None, "i", ("i", "j")):
    _validation.check_axis_name("axis_name", good)
  for bad in (1, 2.0, True, ["i"], ("i", None)):
    _raises_naming("axis_name", lambda bad=bad: _validation.check_axis_name("axis_name", bad))
  for good in (None, 0, -1, (0, 2), [1], np.int64(1), ()):  # (): nothing batched
    _validation.check_argnums("batch_argnums", good)
  for bad in ("0", 1.5, True, [0, "a"], [True]):
    _raises_naming("batch_argnums", lambda bad=bad: _validation.check_argnums("batch_argnums", bad))


def test_flax_serialization_refuses_a_key_of_another_implementation() -> None:
  """Serialization: a saved ``rbg`` key is not silently reinterpreted as a threefry key."""
  from flax import serialization

  params = _params()
  saved = fsgld_optax.sgld(0.1, 1e4, key=jax.random.key(0, impl="rbg")).init(params)
  target = fsgld_optax.sgld(0.1, 1e4, key=jax.random.key(0)).init(params)
  with pytest.raises(ValueError, match="rbg"):
    serialization.from_bytes(target, serialization.to_bytes(saved))


def test_int_seeds_beyond_32_bits_give_their_own_chains() -> None:
  """Without x64, ``jax.random.key`` keeps the low 32 bits of a seed: 2**32 was seed 0."""
  seeds = [0, 1, 2**32 - 1, 2**32, 2**32 + 1, -1, -(2**63), 2**63 - 1]
  data = {
    tuple(
      np.asarray(
        jax.random.key_data(
          fsgld_optax.find_fsgld_state(
            fsgld_optax.fsgld(0.1, 1e4, key=s).init(jnp.zeros(2))
          ).rng_key
        )
      ).tolist()
    )
    for s in seeds
  }
  assert len(data) == len(seeds)
  # Seeds in [0, 2**32) keep jax.random.key's keys, so existing runs are unchanged.
  state = fsgld_optax.find_fsgld_state(fsgld_optax.fsgld(0.1, 1e4, key=7).init(jnp.zeros(2)))
  np.testing.assert_array_equal(
    jax.random.key_data(state.rng_key), jax.random.key_data(jax.random.key(7))
  )
