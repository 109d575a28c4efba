"""Reliability: bad input, integer leaves, dtypes and low precision, non-finite values."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fsgld_optax
from fsgld_optax import _randomness
from fsgld_optax._precision import lost_update_fraction, with_compute_dtype


def _loss(params: Any, x: jax.Array) -> jax.Array:
  """A small regression loss on the floating leaves ``w`` and ``b``."""
  return jnp.mean((x @ params["w"] + params["b"][None, :]) ** 2)


def _all_finite(tree: Any) -> bool:
  """Whether every floating leaf of ``tree`` is finite."""
  return all(
    bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree) if _randomness.is_inexact(x)
  )


def _params() -> dict[str, jax.Array]:
  return {"w": jnp.linspace(-1.0, 1.0, 6).reshape(3, 2), "b": jnp.zeros(2)}


# --- Bad input: a ValueError or TypeError that names the argument. -------------------------

_BAD_FSGLD = [
  ("beta", {"beta": 0.0}),
  ("beta", {"beta": -1.0}),
  ("beta", {"beta": math.nan}),
  ("beta", {"beta": jnp.ones(2)}),
  ("sigma", {"sigma": -1e-3}),
  ("sigma", {"sigma": math.nan}),
  ("sigma", {"sigma": math.inf}),
  ("eta", {"eta": 0.0}),
  ("eta", {"eta": -0.1}),
  ("learning_rate", {"learning_rate": -0.1}),
  ("learning_rate", {"learning_rate": math.nan}),
  ("learning_rate", {"learning_rate": math.inf}),
  ("weight_decay", {"weight_decay": -5e-4}),
  ("langevin_noise", {"langevin_noise": "cauchy"}),
  ("key", {"key": "0"}),
  ("key", {"key": 1.5}),
  ("key", {"key": True}),
  ("key", {"key": None}),
  ("key", {"key": jax.random.split(jax.random.key(0), 2)}),
  ("key", {"key": jnp.zeros(2, jnp.float32)}),
  ("key", {"key": jnp.zeros(3, jnp.uint32)}),
]


@pytest.mark.parametrize(
  ("name", "bad"), _BAD_FSGLD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(_BAD_FSGLD)]
)
def test_fsgld_rejects_bad_hyperparameters(name: str, bad: dict[str, Any]) -> None:
  kwargs: dict[str, Any] = {"learning_rate": 0.1, "beta": 1e6, "key": 0, **bad}
  with pytest.raises((ValueError, TypeError), match=name):
    fsgld_optax.fsgld(**kwargs)


@pytest.mark.parametrize(
  ("name", "call"),
  [
    ("beta", lambda: fsgld_optax.coupled_sigma(0.0, 0.1)),
    ("eta", lambda: fsgld_optax.coupled_sigma(1e8, 0.0)),
    ("learning_rate", lambda: fsgld_optax.sgld(-1.0, 1e4, key=0)),
    ("beta", lambda: fsgld_optax.sgld(0.1, -1e4, key=0)),
    ("key", lambda: fsgld_optax.sgld(0.1, 1e4, key="seed")),
  ],
)
def test_helpers_reject_bad_hyperparameters(name: str, call: Any) -> None:
  with pytest.raises((ValueError, TypeError), match=name):
    call()


@pytest.mark.parametrize(
  ("name", "kwargs"),
  [
    ("n_perturbations", {"n_perturbations": 0}),
    ("n_perturbations", {"n_perturbations": -2}),
    ("n_perturbations", {"n_perturbations": 2.0}),
    ("n_perturbations", {"n_perturbations": True}),
    ("n_perturbations", {"n_perturbations": "2"}),
    ("n_perturbations", {"n_perturbations": 3, "antithetic": True}),
    ("perturbation", {"perturbation": "uniform"}),
    ("axis_name", {"per_device_perturbations": True}),
  ],
)
def test_wrapper_rejects_bad_options(name: str, kwargs: dict[str, Any]) -> None:
  with pytest.raises(ValueError, match=name):
    fsgld_optax.perturbed_value_and_grad(_loss, **kwargs)


def test_wrapper_rejects_a_batch_split_batch_cannot_divide() -> None:
  params = _params()
  opt_state = fsgld_optax.fsgld(0.1, 1e6, key=0).init(params)
  grad_fn = jax.jit(
    fsgld_optax.perturbed_value_and_grad(_loss, n_perturbations=4, split_batch=True)
  )
  with pytest.raises(ValueError, match=r"split_batch.*n_perturbations=4.*\(6, 3\)"):
    grad_fn(params, opt_state, jnp.ones((6, 3)))
  with pytest.raises(ValueError, match="split_batch"):
    grad_fn(params, opt_state, jnp.ones(()))
  bad_argnums = fsgld_optax.perturbed_value_and_grad(
    _loss, n_perturbations=2, split_batch=True, batch_argnums=3
  )
  with pytest.raises(ValueError, match="batch_argnums"):
    bad_argnums(params, opt_state, jnp.ones((4, 3)))


@pytest.mark.parametrize(
  ("tx", "match"),
  [
    (optax.sgd(0.1), r"No FSGLDState \(source of perturbations\) found in opt_state"),
    (
      optax.chain(fsgld_optax.fsgld(0.1, 1e6, key=0), fsgld_optax.sgld(0.1, 1e6, key=1)),
      r"Found 2 FSGLDStates \(sources of perturbations\) in opt_state "
      r"\(at opt_state\[0\]\[0\], opt_state\[1\]\[0\]\)",
    ),
  ],
  ids=["none", "two"],
)
def test_wrapper_rejects_a_state_without_exactly_one_fsgld_state(
  tx: optax.GradientTransformation, match: str
) -> None:
  params = _params()
  grad_fn = fsgld_optax.perturbed_value_and_grad(_loss)
  with pytest.raises(ValueError, match=match):
    grad_fn(params, tx.init(params), jnp.ones((4, 3)))


def test_update_needs_params_for_weight_decay() -> None:
  tx = fsgld_optax.fsgld(0.1, 1e6, weight_decay=5e-4, key=0)
  params = _params()
  with pytest.raises(ValueError, match="params"):
    tx.update(params, tx.init(params))


def test_update_names_both_trees_on_a_structure_mismatch() -> None:
  tx = fsgld_optax.fsgld(0.1, 1e6, key=0)
  params = _params()
  grads = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2), "extra": jnp.zeros(1)}
  message = (
    r"different tree structures:\n  updates: PyTreeDef\(\{'b': \*, 'extra': \*, 'w': \*\}\)\n"
    r"  params:  PyTreeDef\(\{'b': \*, 'w': \*\}\)"
  )
  with pytest.raises(ValueError, match=message):
    tx.update(grads, tx.init(params), params)
  with pytest.raises(ValueError, match=r"updates.*params"):
    jax.jit(tx.update)(grads, tx.init(params), params)


@pytest.mark.parametrize(
  ("name", "kwargs"),
  [
    ("learning_rate", {"learning_rate": optax.linear_schedule(0.1, -0.1, 2)}),
    ("beta", {"beta": optax.linear_schedule(1e6, 0.0, 2)}),
    ("beta", {"beta": optax.linear_schedule(1e6, -1e6, 2), "sigma": 0.01}),
    ("sigma", {"sigma": optax.linear_schedule(0.01, -0.01, 2)}),
  ],
)
def test_schedule_values_are_checked_outside_jit(name: str, kwargs: dict[str, Any]) -> None:
  """Each schedule is valid at steps 0 and 1 and out of range from step 2 (or σ of step 2)."""
  tx = fsgld_optax.fsgld(**{"learning_rate": 0.1, "beta": 1e6, "key": 0, **kwargs})
  params = _params()
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  _, state = tx.update(grads, state, params)  # step 0 is valid
  with pytest.raises(ValueError, match=name):
    for _ in range(2):  # σ of the next step is computed one update earlier than λ and β
      _, state = tx.update(grads, state, params)


def test_schedule_values_are_checked_in_a_jitted_loop_under_disable_jit() -> None:
  """The documented debug path for jitted code: run its steps with jit disabled."""
  tx = fsgld_optax.fsgld(optax.linear_schedule(0.1, -0.1, 2), 1e6, key=0)
  params = _params()
  step = jax.jit(tx.update)
  grads = jax.tree.map(jnp.ones_like, params)
  state = tx.init(params)
  for _ in range(2):
    _, state = step(grads, state, params)
  _, unchecked = step(grads, state, params)  # step 2, λ < 0: no error under jit
  assert int(fsgld_optax.find_fsgld_state(unchecked).count) == 3
  with jax.disable_jit(), pytest.raises(ValueError, match="learning_rate"):
    step(grads, state, params)


def test_negative_scheduled_learning_rate_under_jit_gives_non_finite_updates() -> None:
  """Under jit a schedule cannot be checked; λ < 0 (or β ≤ 0) makes the noise scale NaN.

  So ``optax.apply_if_finite`` skips such steps and ``jax_debug_nans`` reports them.
  """
  tx = fsgld_optax.fsgld(optax.linear_schedule(0.1, -0.1, 2), 1e6, key=0)
  params = _params()
  step = jax.jit(tx.update)
  grads = jax.tree.map(jnp.ones_like, params)
  state = tx.init(params)
  finite = []
  for _ in range(3):
    updates, state = step(grads, state, params)
    finite.append(bool(_all_finite(updates)))
  assert finite == [True, True, False]


# --- Integer and boolean parameter leaves are skipped. -------------------------------------


def _mixed_params() -> dict[str, Any]:
  return {
    "w": jnp.linspace(-1.0, 1.0, 6).reshape(3, 2),
    "b": jnp.zeros(2),
    "step": jnp.array(7, jnp.int32),
    "mask": jnp.array([True, False]),
    "table": [jnp.arange(4, dtype=jnp.int8), None],
  }


def _mixed_loss(params: Any, x: jax.Array) -> jax.Array:
  scale = params["step"].astype(jnp.float32) / 7.0
  b = jnp.where(params["mask"], params["b"], 0.0)
  return scale * jnp.mean((jnp.atleast_2d(x) @ params["w"] + b[None, :]) ** 2)


_N4 = {"n_perturbations": 4, "antithetic": True, "split_batch": True}


@pytest.mark.parametrize(
  ("jit", "wrapper_kwargs", "weight_decay"),
  [(False, {}, 0.0), (True, {}, 5e-4), (False, _N4, 5e-4), (True, _N4, 0.0)],
  ids=["eager-n1", "jit-n1-decay", "eager-n4-antithetic-split-decay", "jit-n4-antithetic-split"],
)
def test_integer_and_boolean_leaves_are_skipped_through_the_full_loop(
  jit: bool, wrapper_kwargs: dict[str, Any], weight_decay: float
) -> None:
  params = _mixed_params()
  tx = fsgld_optax.fsgld(0.1, 1e4, weight_decay=weight_decay, key=0)
  grad_fn = fsgld_optax.perturbed_value_and_grad(_mixed_loss, **wrapper_kwargs)

  def step(params: Any, opt_state: Any, x: jax.Array) -> Any:
    loss, grads = grad_fn(params, opt_state, x)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, grads, updates

  step = jax.jit(step) if jit else step
  opt_state = tx.init(params)
  x = jnp.linspace(-1.0, 1.0, 24).reshape(8, 3)
  new = params
  for _ in range(3):
    new, opt_state, loss, grads, updates = step(new, opt_state, x)
  assert jnp.isfinite(loss)
  for name in ("step", "mask"):
    assert grads[name].dtype == jax.dtypes.float0
    assert updates[name].dtype == params[name].dtype
    assert not np.any(updates[name])
  assert grads["table"][0].dtype == jax.dtypes.float0 and grads["table"][1] is None
  assert jax.tree.structure(new) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(params), strict=True):
    assert a.dtype == b.dtype
    if not jnp.issubdtype(a.dtype, jnp.floating):
      np.testing.assert_array_equal(a, b)
  # The floating leaves did move, by a finite amount.
  assert _all_finite(new) and not np.array_equal(new["w"], params["w"])


def test_integer_leaves_get_zero_updates_without_params() -> None:
  """Without ``params`` a float0 gradient becomes a ``bool`` zero, which adds nothing."""
  params = _mixed_params()
  tx = fsgld_optax.fsgld(0.1, 1e4, key=0)
  opt_state = tx.init(params)
  _, grads = fsgld_optax.perturbed_value_and_grad(_mixed_loss)(params, opt_state, jnp.ones(3))
  updates, _ = tx.update(grads, opt_state)
  assert updates["step"].dtype == jnp.bool_ and updates["table"][0].shape == (4,)
  new = optax.apply_updates(params, updates)
  for name in ("step", "mask"):
    assert new[name].dtype == params[name].dtype
    np.testing.assert_array_equal(new[name], params[name])
  # Integer gradients (not float0) passed by hand are not applied either.
  int_grads = {**grads, "step": jnp.array(3, jnp.int32), "table": [jnp.ones(4, jnp.int8), None]}
  int_updates, _ = tx.update(int_grads, opt_state, params)
  assert int(int_updates["step"]) == 0 and not np.any(int_updates["table"][0])


def test_integer_leaves_inside_inject_hyperparams_and_masked_clipping() -> None:
  """float0 gradients pass through ``inject_hyperparams``; optax transformations that do
  arithmetic on every leaf (``clip_by_global_norm``) go inside ``optax.masked``."""
  params = _mixed_params()
  floating = jax.tree.map(lambda p: jnp.issubdtype(p.dtype, jnp.floating), params)
  tx = optax.chain(
    optax.masked(optax.clip_by_global_norm(1.0), floating),
    optax.inject_hyperparams(fsgld_optax.fsgld, static_args=("key",))(0.1, 1e4, key=0),
  )
  grad_fn = fsgld_optax.perturbed_value_and_grad(_mixed_loss, n_perturbations=2)

  @jax.jit
  def step(params: Any, opt_state: Any) -> Any:
    _, grads = grad_fn(params, opt_state, jnp.ones(3))
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  new, opt_state = step(params, tx.init(params))
  assert int(fsgld_optax.find_fsgld_state(opt_state).count) == 1
  np.testing.assert_array_equal(new["step"], params["step"])
  np.testing.assert_array_equal(new["table"][0], params["table"][0])
  assert not np.array_equal(new["w"], params["w"])


# --- dtypes. --------------------------------------------------------------------------------

_DTYPES = ["bfloat16", "float16", "float32", "float64"]


@pytest.mark.parametrize("dtype_name", _DTYPES)
def test_dtypes_are_kept_through_init_update_and_wrapper(dtype_name: str) -> None:
  with jax.enable_x64(dtype_name == "float64"):
    dtype = jnp.dtype(dtype_name)
    params = jax.tree.map(lambda p: p.astype(dtype), _params())
    tx = optax.chain(
      optax.clip_by_global_norm(10.0), fsgld_optax.fsgld(0.05, 1e4, weight_decay=5e-4, key=0)
    )
    grad_fn = fsgld_optax.perturbed_value_and_grad(_loss, n_perturbations=2, has_aux=False)

    @jax.jit
    def step(params: Any, opt_state: Any, x: jax.Array) -> Any:
      loss, grads = grad_fn(params, opt_state, x)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss, grads, updates

    opt_state = tx.init(params)
    x = jnp.linspace(-1.0, 1.0, 12, dtype=dtype).reshape(4, 3)
    for _ in range(2):
      new, opt_state, loss, grads, updates = step(params, opt_state, x)
    assert loss.dtype == dtype
    for tree in (grads, updates, new):
      assert jax.tree.map(lambda a: a.dtype, tree) == {"w": dtype, "b": dtype}
      assert _all_finite(tree)
    state = fsgld_optax.find_fsgld_state(opt_state)
    assert fsgld_optax.find_fsgld_state(state).sigma.dtype == jnp.result_type(float)


_LAMBDA = 0.1
_NOISE_SCALE = 1e-5  # sqrt(2 λ / β): the Langevin step of the paper's β ~ 1e9.
_BETA = 2.0 * _LAMBDA / _NOISE_SCALE**2
_N_WEIGHTS = 16384


def _one_step_change(params: Any, loss_fn: Any) -> tuple[Any, Any, Any]:
  """One full fSGLD step (wrapper, update, apply_updates) from ``params``, with and without
  the Langevin noise: returns the noisy result, the noiseless one, and the noisy update."""
  x = jnp.ones(_N_WEIGHTS, jnp.bfloat16)

  @jax.jit
  def steps(params: Any) -> Any:
    results = []
    for beta in (_BETA, math.inf):
      tx = fsgld_optax.fsgld(_LAMBDA, beta, sigma=1e-2, key=3)
      opt_state = tx.init(params)
      _, grads = fsgld_optax.perturbed_value_and_grad(loss_fn)(params, opt_state, x)
      updates, _ = tx.update(grads, opt_state, params)
      results.append((optax.apply_updates(params, updates), updates))
    (noisy, updates), (clean, _) = results
    return noisy, clean, updates

  return steps(params)


def _bf16_loss(params: Any, x: jax.Array) -> jax.Array:
  w = params["w"]
  return jnp.sum((w * x - 1.0) ** 2).astype(jnp.float32) / 2.0


def test_bf16_params_lose_the_langevin_noise_and_float32_master_weights_keep_it() -> None:
  """A 1e-5 Langevin step vanishes when added to bfloat16 weights of size ~1 (spacing
  2⁻⁷ ≈ 7.8e-3); with float32 master weights and a bfloat16 forward pass it survives.

  The same step without noise (β = ∞, same key, so the same ε and gradient) is the
  reference: the difference of the two results is what the noise moved.
  """
  w = 1.0 + jax.random.uniform(jax.random.key(0), (_N_WEIGHTS,), minval=0.0, maxval=0.5)
  # The Langevin part of step 0, s ξ, reproduced from the key.
  key = _randomness.langevin_key(jax.random.key(3), 0)
  noise = {"w": _NOISE_SCALE * _randomness.standard_noise_like(key, {"w": w}, "gaussian")["w"]}

  # bfloat16 parameters: the noise is rounded away.
  params = {"w": w.astype(jnp.bfloat16)}
  noisy, clean, updates = _one_step_change(params, _bf16_loss)
  assert updates["w"].dtype == jnp.bfloat16
  moved = np.asarray(noisy["w"] != clean["w"])
  # Only weights whose drift step lands within |s ξ| of a rounding midpoint flip (by a whole
  # ulp): expected fraction ≈ E|s ξ| / ulp ≈ 0.8e-5 / (3.9e-3 … 7.8e-3) ≈ 0.1 … 0.2 %.
  assert moved.mean() < 0.01
  assert float(lost_update_fraction(params, noise)) > 0.99

  # float32 master weights, bfloat16 compute: the noise survives.
  master = {"w": w}
  loss32 = with_compute_dtype(_bf16_loss, jnp.bfloat16)
  noisy, clean, updates = _one_step_change(master, loss32)
  assert updates["w"].dtype == jnp.float32
  change = np.asarray(noisy["w"] - clean["w"], np.float64)
  # Exactly the Langevin draw of step 0, up to float32 rounding of weights in [1, 2)
  # (half an ulp, 2⁻²⁴ · 2 ≈ 1.2e-7, on each of the two results, plus the update's own).
  np.testing.assert_allclose(change, noise["w"], rtol=0, atol=3e-7)
  # Statistics: the std of N = 16384 Gaussian draws has relative standard error
  # 1/sqrt(2 N) ≈ 0.55 %, the mean has standard error s / sqrt(N) = s / 128; the tolerances
  # are 4.5 and 4 standard errors.
  assert abs(change.std() / _NOISE_SCALE - 1.0) < 0.025
  assert abs(change.mean()) < 4 * _NOISE_SCALE / 128
  # |s ξ| below half a float32 ulp (|ξ| < 0.012, probability ~1 %) rounds to no change.
  assert np.mean(change != 0) > 0.95
  assert float(lost_update_fraction(master, noise)) < 0.05


def test_lost_update_fraction_matches_a_direct_computation() -> None:
  params = {"a": jnp.array([1.0, 2.0, 256.0], jnp.bfloat16), "n": jnp.array(1), "z": None}
  updates = {"a": jnp.array([1e-5, 0.5, 1.0], jnp.bfloat16), "n": jnp.array(0), "z": None}
  # bf16: 1 + 1e-5 -> 1 (lost 1e-5), 2 + 0.5 -> 2.5 (exact), 256 + 1 -> 256 (spacing 2, tie
  # to even: lost 1).
  expected = math.sqrt(1e-5**2 + 1.0) / math.sqrt(1e-5**2 + 0.25 + 1.0)
  rho = float(lost_update_fraction(params, updates))
  assert rho == pytest.approx(expected, rel=1e-3)
  assert float(lost_update_fraction(params, jax.tree.map(jnp.zeros_like, updates))) == 0.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_lost_update_fraction_is_nan_for_a_non_finite_update(bad: float) -> None:
  # A NaN update used to report 0 ("nothing lost"); under jit too, it must come out NaN.
  params = {"a": jnp.ones(3, jnp.bfloat16), "b": jnp.ones(2)}
  updates = {"a": jnp.array([1e-5, bad, 0.0], jnp.bfloat16), "b": jnp.full(2, 1e-3)}
  assert np.isnan(float(lost_update_fraction(params, updates)))
  assert np.isnan(float(jax.jit(lost_update_fraction)(params, updates)))
  # A huge but finite float32 update (its square overflows) is not mistaken for one.
  big = {"a": jnp.zeros(3, jnp.bfloat16), "b": jnp.full(2, 1e30)}
  assert float(lost_update_fraction(params, big)) == pytest.approx(0.0, abs=1e-6)


def test_lost_update_fraction_rejects_a_broadcast_update() -> None:
  with pytest.raises(ValueError, match=r"updates\['w'\]"):
    lost_update_fraction({"w": jnp.ones((2, 3))}, {"w": jnp.ones(3)})
  with pytest.raises(ValueError, match="updates must have the tree structure"):
    lost_update_fraction({"w": jnp.ones(3)}, {"v": jnp.ones(3)})


# --- Non-finite values. ---------------------------------------------------------------------


_FINITE_TX = optax.apply_if_finite(
  optax.chain(optax.clip_by_global_norm(10.0), fsgld_optax.fsgld(0.05, 1e4, key=1)),
  max_consecutive_errors=3,
)


@jax.jit
def _finite_step(params: Any, opt_state: Any, x: jax.Array) -> Any:
  grad_fn = fsgld_optax.perturbed_value_and_grad(_loss, n_perturbations=2, split_batch=True)
  _, grads = grad_fn(params, opt_state, x)
  updates, opt_state = _FINITE_TX.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def _finite_run(batches: list[jax.Array]) -> tuple[list[Any], list[Any]]:
  """Runs ``apply_if_finite(chain(clip, fsgld))`` over ``batches``; returns params and states."""
  params, opt_state = _params(), _FINITE_TX.init(_params())
  all_params, all_states = [params], [opt_state]
  for x in batches:
    params, opt_state = _finite_step(params, opt_state, x)
    all_params.append(params)
    all_states.append(opt_state)
  return all_params, all_states


@pytest.mark.parametrize("bad_value", [math.nan, math.inf], ids=["nan", "inf"])
def test_apply_if_finite_skips_a_bad_step_without_consuming_randomness(bad_value: float) -> None:
  """A skipped step leaves the fSGLD state (count, key, σ) as it was, so the next good step
  is step ``k`` of the uninterrupted run: the run with a bad batch equals the run without it,
  bitwise. Only one of the two perturbations sees the bad half of the batch (split_batch), and
  the mean over perturbations is non-finite, so the whole step is skipped."""
  batches = [jnp.linspace(-1.0, 1.0, 12).reshape(4, 3) * (1 + i) for i in range(3)]
  bad = batches[0].at[3, 0].set(bad_value)  # only in perturbation 1's half of the batch
  params, states = _finite_run([batches[0], bad, batches[1], batches[2]])
  ref_params, ref_states = _finite_run(batches)

  skipped = states[2]
  assert int(skipped.notfinite_count) == 1 and not bool(skipped.last_finite)
  before = fsgld_optax.find_fsgld_state(states[1])
  after = fsgld_optax.find_fsgld_state(skipped)
  assert (
    int(fsgld_optax.find_fsgld_state(before).count)
    == int(fsgld_optax.find_fsgld_state(after).count)
    == 1
  )
  np.testing.assert_array_equal(
    jax.random.key_data(fsgld_optax.find_fsgld_state(after).rng_key),
    jax.random.key_data(fsgld_optax.find_fsgld_state(before).rng_key),
  )
  for a, b in zip(jax.tree.leaves(params[2]), jax.tree.leaves(params[1]), strict=True):
    np.testing.assert_array_equal(a, b)
  assert _all_finite(params[2]) and _all_finite(fsgld_optax.find_fsgld_state(after).sigma)
  # Training continues: the good step after the skipped one resets the error count and is
  # the uninterrupted run's step 1, and so on.
  assert int(states[3].notfinite_count) == 0
  assert int(fsgld_optax.find_fsgld_state(states[-1]).count) == 3
  for a, b in zip(jax.tree.leaves(params[-1]), jax.tree.leaves(ref_params[-1]), strict=True):
    np.testing.assert_array_equal(a, b)
  assert int(states[-1].total_notfinite) == 1 and int(ref_states[-1].total_notfinite) == 0


def test_one_non_finite_perturbation_makes_the_mean_non_finite() -> None:
  params = _params()
  opt_state = fsgld_optax.fsgld(0.05, 1e4, key=0).init(params)
  grad_fn = fsgld_optax.perturbed_value_and_grad(_loss, n_perturbations=4, split_batch=True)
  x = jnp.ones((8, 3))
  loss, grads = jax.jit(grad_fn)(params, opt_state, x)
  assert jnp.isfinite(loss) and _all_finite(grads)
  loss, grads = jax.jit(grad_fn)(params, opt_state, x.at[5, 1].set(jnp.nan))  # slice 2 of 4
  assert jnp.isnan(loss)
  assert not _all_finite(grads)


def test_find_fsgld_state_inside_apply_if_finite() -> None:
  tx = optax.apply_if_finite(
    optax.chain(optax.clip(1.0), fsgld_optax.fsgld(0.1, 1e4, key=5)), max_consecutive_errors=2
  )
  state = fsgld_optax.find_fsgld_state(tx.init(_params()))
  assert (
    isinstance(state, fsgld_optax.FSGLDState)
    and int(fsgld_optax.find_fsgld_state(state).count) == 0
  )
