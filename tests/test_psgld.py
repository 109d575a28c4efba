"""Preconditioned fSGLD and pSGLD, and both stateful members of the family in optax and Flax.

pSGLD's step is −λ G (g + wθ) + sqrt(2λG/β) ξ with G = 1/(ε + sqrt V), V an RMSprop average
of the squared gradient started at ``initial_scale``. The tests pin: RMSprop at β = inf
(optax's ``scale_by_rms`` with ``eps_in_sqrt=False``); a NumPy reference with the same draws;
the one-step noise scale; no blow-up of the first steps at near-zero gradients; the variances
of a 100:1 Gaussian at a decay close to 1. Then :func:`fsghmc` and
:func:`preconditioned_fsgld`, the two members whose state carries a parameter-sized buffer,
under ``inject_hyperparams``, ``MultiSteps``, ``apply_if_finite`` and ``masked``, in
``nnx.Optimizer``, in a Linen ``TrainState`` and through an orbax checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from _family import full_grad, langevin_draw, loss_fn, make_params, trajectory
from flax import nnx
from flax.training import train_state

import fsgld_optax
import fsgld_optax.flax
from benchmarks import psgld as psgld_benchmark

INF = float("inf")


def assert_trees_equal(a, b) -> None:
  as_data = lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(as_data(x), as_data(y)), a, b)


# --- reductions and references --------------------------------------------------------------


@pytest.mark.parametrize(("decay", "initial_scale"), [(0.99, 1.0), (0.9, 0.25)])
def test_noiseless_is_optax_rmsprop(decay, initial_scale):
  lr, eps, weight_decay = 0.01, 1e-5, 1e-2
  ours = fsgld_optax.psgld(
    lr, INF, decay=decay, eps=eps, initial_scale=initial_scale, weight_decay=weight_decay, key=0
  )
  rmsprop = optax.chain(
    optax.add_decayed_weights(weight_decay),
    optax.scale_by_rms(decay, eps, initial_scale, eps_in_sqrt=False),
    optax.scale(-lr),
  )
  actual, _ = trajectory(ours, 40)
  expected, _ = trajectory(rmsprop, 40)
  for a, e in zip(actual, expected, strict=True):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a, e)
  assert float(jnp.max(jnp.abs(expected[-1]["w"] - expected[0]["w"]))) > 0.1
  # The building block alone, on the same gradients.
  block = fsgld_optax.scale_by_rms_langevin(
    lr, INF, decay=decay, eps=eps, initial_scale=initial_scale, key=0
  )
  bare = optax.chain(
    optax.scale_by_rms(decay, eps, initial_scale, eps_in_sqrt=False), optax.scale(-lr)
  )
  a_updates = trajectory(block, 10)[1]
  e_updates = trajectory(bare, 10)[1]
  for a, e in zip(a_updates, e_updates, strict=True):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9), a, e)


def test_langevin_step_matches_numpy_reference():
  lr, beta, decay, eps, initial_scale, weight_decay = 0.01, 1e3, 0.95, 1e-5, 0.5, 1e-2
  key = jax.random.key(4)
  schedule = optax.linear_schedule(lr, lr / 4, 20)
  tx = fsgld_optax.psgld(
    schedule,
    beta,
    decay=decay,
    eps=eps,
    initial_scale=initial_scale,
    weight_decay=weight_decay,
    key=key,
  )
  params, updates = trajectory(tx, 20)
  nu = {k: np.full(v.shape, initial_scale) for k, v in params[0].items()}
  for k in range(20):
    grads = full_grad(params[k])
    xi = langevin_draw(key, jnp.int32(k), params[0])
    lr_k = float(schedule(k))
    for name in nu:
      u = np.asarray(grads[name], np.float64) + weight_decay * np.asarray(
        params[k][name], np.float64
      )
      nu[name] = decay * nu[name] + (1 - decay) * u**2
      g = 1 / (eps + np.sqrt(nu[name]))
      expected = -lr_k * g * u + np.sqrt(2 * lr_k * g / beta) * np.asarray(xi[name], np.float64)
      # float32 against float64 on the library's own θ_k: rounding, relative to the largest
      # of the two terms (the drift can cancel the noise).
      scale = float(np.max(np.abs(lr_k * g * u) + np.abs(expected)))
      np.testing.assert_allclose(updates[k][name], expected, rtol=1e-6, atol=2e-6 * scale)


def test_one_step_noise_scale():
  lr, beta, decay, initial_scale, size = 0.01, 100.0, 0.99, 4.0, 100_000
  tx = fsgld_optax.psgld(lr, beta, decay=decay, initial_scale=initial_scale, key=6)
  params = jnp.zeros(size)
  updates, _ = jax.jit(tx.update)(jnp.zeros(size), tx.init(params), params)
  # A zero gradient: V₁ = ρ V₀, G₁ = 1/(ε + sqrt(ρ V₀)), and the step is sqrt(2λG₁/β) ξ.
  g = 1 / (1e-5 + np.sqrt(decay * initial_scale))
  ratio = float(jnp.std(updates)) / np.sqrt(2 * lr * g / beta)
  # The sample std of 1e5 normal draws has s.e. 0.22%: 1% is 4.5 s.e.; G without the square
  # root (ratio 0.71) or without ρ (0.995 ... caught by the reference test) are far outside.
  assert abs(ratio - 1) < 0.01


def test_first_steps_do_not_explode_at_near_zero_gradients():
  """V₀ = initial_scale keeps G ≈ 1 while V is still empty; bias correction would give 1/ε."""
  lr, beta, decay, size = 0.01, 1e4, 0.999, 10_000
  tx = fsgld_optax.psgld(lr, beta, decay=decay, key=1)
  params = jnp.zeros(size)
  update = jax.jit(tx.update)
  opt_state = tx.init(params)
  tiny = jnp.full(size, 1e-12)
  for k in range(1, 11):
    updates, opt_state = update(tiny, opt_state, params)
    params = optax.apply_updates(params, updates)
    # G_k = 1/(ε + sqrt(ρ^k)) ≈ 1: the SGLD noise sqrt(2λ/β) = 1.4e-3, within 5% (s.e. 0.7%).
    sgld_scale = np.sqrt(2 * lr / (beta * np.sqrt(decay**k)))
    assert abs(float(jnp.std(updates)) / sgld_scale - 1) < 0.05
  # After 10 such steps each coordinate is N(0, ≈ 10 · 2λ/β): below 6 std over 10⁴ of them
  # (a 2e-5 chance to fail). With Adam's bias correction V̂₁ = g₁², G₁ = 1/(ε + 1e-12) ≈ 1e5
  # and the first step alone would be 316x larger.
  assert float(jnp.max(jnp.abs(params))) < 6 * np.sqrt(10 * 2 * lr / beta) * 1.01


# --- stationary variances of a 100:1 Gaussian -------------------------------------------------

GAUSSIAN = dataclasses.replace(
  psgld_benchmark.DEFAULT, num_chains=400, burn_in=500, num_samples=100, thinning=20
)


def test_recovers_the_variances_of_an_ill_conditioned_gaussian_at_decay_near_one():
  decay, lr = 0.9999, GAUSSIAN.learning_rate
  make = lambda key: fsgld_optax.psgld(lr, GAUSSIAN.beta, decay=decay, key=key)
  samples = psgld_benchmark.run_chains(GAUSSIAN, make, seed=3)
  g = psgld_benchmark.adapted_preconditioner(GAUSSIAN)
  a = np.asarray(GAUSSIAN.curvatures)
  # The stationary variance with G frozen at its limit is exact for a Gaussian: the
  # discretisation factor 1/(1 − λGa/2) (1.053 stiff, 1.005 soft).
  frozen = psgld_benchmark.frozen_variance(GAUSSIAN, lr * g)
  ratio, stderr = psgld_benchmark.variance_ratio(samples, frozen)
  # Dropping Γ adds a bias of about c (1 − ρ) τᵢ, with τᵢ = 1/(λ Gᵢ aᵢ) the relaxation time
  # (10 and 100 steps); c ≈ 0.4 measured in benchmarks/psgld.py over decays 0.99 … 0.9999.
  # Tolerance: that bias (with c = 1) plus 4 standard errors of the chain means.
  allowance = (1 - decay) / (lr * g * a)
  for i in range(2):
    assert abs(ratio[i] - 1) < allowance[i] + 4 * stderr[i], (i, ratio, stderr)


def test_benchmark_check_compares_the_sweep_statistically(tmp_path):
  tiny = dataclasses.replace(
    psgld_benchmark.QUICK, decays=(0.9999,), num_chains=100, burn_in=100, num_samples=50
  )
  results = psgld_benchmark.run(tiny, progress=False)
  results["provenance"] = {}
  (tmp_path / "psgld.json").write_text(json.dumps(results))
  check = psgld_benchmark.main(["--check", "--quick", "--no-progress", "--out", str(tmp_path)])
  report = check["check"]["report"]
  # Both axes of the decay, compared statistically (never bitwise: other chains).
  assert check["check"]["passed"] and "2 quantities" in report and "bitwise" not in report


# --- both stateful members in optax wrappers and Flax -----------------------------------------

MEMBERS = {
  "fsghmc": lambda key, **kw: fsgld_optax.fsghmc(
    kw.pop("learning_rate", 0.05), 1e4, momentum=kw.pop("momentum", 0.9), key=key, **kw
  ),
  "preconditioned_fsgld": lambda key, **kw: fsgld_optax.preconditioned_fsgld(
    kw.pop("learning_rate", 0.01), 1e4, decay=kw.pop("decay", 0.99), key=key, **kw
  ),
}
members = pytest.mark.parametrize("member", list(MEMBERS))


def step_fn(tx: optax.GradientTransformation, n: int = 2) -> Any:
  grad_fn = fsgld_optax.perturbed_value_and_grad(loss_fn, n_perturbations=n)

  @jax.jit
  def step(params, opt_state):
    _, grads = grad_fn(params, opt_state)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return step


def run(tx: optax.GradientTransformation, steps: int = 4, params: Any = None) -> tuple[Any, Any]:
  params = make_params() if params is None else params
  step, opt_state = step_fn(tx), tx.init(params)
  for _ in range(steps):
    params, opt_state = step(params, opt_state)
  return params, opt_state


@members
def test_inject_hyperparams_equals_plain_and_the_injected_values_act(member):
  own = {"fsghmc": "momentum", "preconditioned_fsgld": "decay"}[member]
  factory = getattr(fsgld_optax, member)
  values = {"learning_rate": 0.05, "beta": 1e4, own: 0.9, "weight_decay": 1e-3}
  plain = factory(key=7, **values)
  injected = optax.inject_hyperparams(factory)(key=7, **values)
  a_params, a_state = run(plain)
  b_params, b_state = run(injected)
  assert_trees_equal(a_params, b_params)
  # Change the learning rate and the member's own hyperparameter in the state: the next
  # update is the plain optimizer's with those values, from the same inner state.
  params = make_params()
  grads = jax.grad(loss_fn)(params)
  b_state.hyperparams["learning_rate"] = jnp.asarray(0.02)
  b_state.hyperparams[own] = jnp.asarray(0.5)
  got, _ = jax.jit(injected.update)(grads, b_state, params)
  other = factory(key=7, **{**values, "learning_rate": 0.02, own: 0.5})
  want, _ = other.update(grads, b_state.inner_state, params)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9), got, want)
  unchanged, _ = plain.update(grads, a_state, params)
  assert not np.allclose(got["w"], unchanged["w"], rtol=1e-3)


@members
def test_multisteps_applies_the_member_to_the_mean_gradient(member):
  params = make_params()
  g1 = jax.tree.map(jnp.ones_like, params)
  g2 = jax.tree.map(lambda p: -3.0 * jnp.ones_like(p), params)
  multi = optax.MultiSteps(MEMBERS[member](2), every_k_schedule=2)
  state = multi.init(params)
  u1, state = multi.update(g1, state, params)
  u2, state = multi.update(g2, state, params)
  jax.tree.map(lambda u: np.testing.assert_array_equal(u, 0.0), u1)
  tx = MEMBERS[member](2)
  expected, _ = tx.update(jax.tree.map(lambda a, b: (a + b) / 2, g1, g2), tx.init(params), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9), u2, expected)
  assert int(fsgld_optax.find_fsgld_state(state).count) == 1
  # The wrapper finds the source inside MultiSteps, and runs.
  params, state = run(multi, steps=2)
  assert int(fsgld_optax.find_fsgld_state(state).count) == 1


@members
def test_apply_if_finite_skips_a_bad_step_without_consuming_randomness(member):
  tx = optax.apply_if_finite(MEMBERS[member](3), max_consecutive_errors=3)
  params = make_params()
  grads = [jax.grad(loss_fn)(params), None, jax.grad(loss_fn)(params)]
  grads[1] = jax.tree.map(lambda g: g.at[0].set(jnp.nan), grads[0])
  update = jax.jit(tx.update)
  state = tx.init(params)
  outs = []
  for g in grads:
    updates, state = update(g, state, params)
    outs.append(updates)
  reference = MEMBERS[member](3)
  ref_state, ref_update = reference.init(params), jax.jit(reference.update)
  ref = []
  for g in (grads[0], grads[2]):
    updates, ref_state = ref_update(g, ref_state, params)
    ref.append(updates)
  jax.tree.map(lambda u: np.testing.assert_array_equal(u, 0.0), outs[1])
  assert_trees_equal(outs[0], ref[0])
  assert_trees_equal(outs[2], ref[1])  # the velocity / V and the step count were untouched
  assert_trees_equal(state.inner_state, ref_state)


@members
def test_masked_member_perturbs_and_moves_only_the_masked_in_leaves(member):
  tx = optax.masked(MEMBERS[member](4, sigma=0.3), {"w": True, "b": False})
  params = jax.tree.map(jnp.zeros_like, make_params())
  quadratic = lambda p: 0.5 * (jnp.sum(p["w"] ** 2) + jnp.sum(p["b"] ** 2))
  grad_fn = jax.jit(fsgld_optax.perturbed_value_and_grad(quadratic))
  opt_state = tx.init(params)
  _, grads = grad_fn(params, opt_state)
  # At θ = 0 the gradient is the perturbation: σε on w, exactly 0 on b.
  np.testing.assert_array_equal(grads["b"], 0.0)
  np.testing.assert_allclose(float(jnp.std(grads["w"])), 0.3, rtol=0.6)
  assert bool(jnp.all(grads["w"] != 0))
  updates, opt_state = tx.update(grads, opt_state, params)
  np.testing.assert_array_equal(updates["b"], grads["b"])  # masked out: passed through
  assert bool(jnp.all(updates["w"] != grads["w"]))


class _Mlp(nnx.Module):
  def __init__(self, rngs: nnx.Rngs) -> None:
    self.hidden = nnx.Linear(3, 8, rngs=rngs)
    self.out = nnx.Linear(8, 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.out(jnp.tanh(self.hidden(x)))[:, 0]


def _data() -> tuple[jax.Array, jax.Array]:
  kx, ky = jax.random.split(jax.random.key(42))
  return jax.random.normal(kx, (16, 3)), jax.random.normal(ky, (16,))


@members
def test_nnx_optimizer_equals_the_functional_loop(member):
  x, y = _data()
  model = _Mlp(nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  optimizer = nnx.Optimizer(model, MEMBERS[member](5, sigma=0.05), wrt=nnx.Param)
  nnx_loss = lambda m, x, y: jnp.mean((m(x) - y) ** 2)
  grad_fn = fsgld_optax.flax.nnx_value_and_grad(nnx_loss, n_perturbations=2)

  @nnx.jit
  def train_step(model, optimizer, x, y):
    loss, grads = grad_fn(model, optimizer, x, y)
    optimizer.update(model, grads)
    return loss

  # The same steps on the pure parameter state, with the plain wrapper.
  tx = MEMBERS[member](5, sigma=0.05)
  pure_loss = lambda p, x, y: nnx_loss(nnx.merge(graphdef, p), x, y)
  ref_step = step_fn_args(tx, pure_loss)
  initial = nnx.to_pure_dict(params)
  ref_params, ref_state = params, tx.init(params)
  for _ in range(3):  # first, since ``params`` shares its variables with ``model``
    ref_params, ref_state = ref_step(ref_params, ref_state, x, y)
  for _ in range(3):
    train_step(model, optimizer, x, y)
  got = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  want = nnx.to_pure_dict(ref_params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)
  assert int(fsgld_optax.find_fsgld_state(nnx.as_pure(optimizer.opt_state)).count) == 3
  assert not np.allclose(want["hidden"]["kernel"], initial["hidden"]["kernel"])


def step_fn_args(tx: optax.GradientTransformation, loss: Any) -> Any:
  grad_fn = fsgld_optax.perturbed_value_and_grad(loss, n_perturbations=2)

  @jax.jit
  def step(params, opt_state, *batch):
    _, grads = grad_fn(params, opt_state, *batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return step


@members
def test_linen_train_state_equals_the_functional_loop(member):
  x, y = _data()
  dense = nn.Dense(1)
  params = dense.init(jax.random.key(0), x)["params"]
  linen_loss = lambda p, x, y: jnp.mean((dense.apply({"params": p}, x)[:, 0] - y) ** 2)
  state = train_state.TrainState.create(
    apply_fn=dense.apply, params=params, tx=MEMBERS[member](6, sigma=0.05)
  )
  step = jax.jit(fsgld_optax.flax.linen_train_step(linen_loss, n_perturbations=2))
  tx = MEMBERS[member](6, sigma=0.05)
  ref_step = step_fn_args(tx, linen_loss)
  ref_params, ref_state = params, tx.init(params)
  for _ in range(3):
    state, _ = step(state, x, y)
    ref_params, ref_state = ref_step(ref_params, ref_state, x, y)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), state.params, ref_params
  )
  assert int(state.step) == 3
  assert int(fsgld_optax.find_fsgld_state(state.opt_state).count) == 3


@members
def test_orbax_checkpoint_resumes_bitwise(member, tmp_path: pathlib.Path):
  tx = optax.chain(
    optax.clip_by_global_norm(1.0), MEMBERS[member](jax.random.key(8), weight_decay=5e-4)
  )
  step = step_fn(tx)
  params = make_params()
  ref = (params, tx.init(params))
  for _ in range(6):
    ref = step(*ref)
  half = (params, tx.init(params))
  for _ in range(3):
    half = step(*half)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(tmp_path / "state", {"params": half[0], "opt_state": half[1]})
    checkpointer.wait_until_finished()
    abstract = jax.tree.map(
      ocp.utils.to_shape_dtype_struct, {"params": params, "opt_state": tx.init(params)}
    )
    restored = checkpointer.restore(tmp_path / "state", abstract)
  resumed = (restored["params"], restored["opt_state"])
  for _ in range(3):
    resumed = step(*resumed)
  assert_trees_equal(resumed, ref)
  assert int(fsgld_optax.find_fsgld_state(resumed[1]).count) == 6


def test_second_moment_is_kept_in_float32_for_bfloat16_parameters():
  """In bfloat16 ρ = 0.999 rounds to 1: a V kept there would grow without bound."""
  tx = fsgld_optax.scale_by_rms_langevin(0.01, INF, decay=0.999, initial_scale=0.0, key=0)
  grads = {"w": jnp.full((3,), 2.0)}

  @jax.jit
  def run(g, state):
    state = jax.lax.fori_loop(0, 1999, lambda _, s: tx.update(g, s)[1], state)
    return tx.update(g, state)

  runs = {}
  for dtype in (jnp.bfloat16, jnp.float32):
    g = jax.tree.map(lambda x, dtype=dtype: x.astype(dtype), grads)
    runs[dtype] = run(g, tx.init({"w": jnp.zeros((3,), dtype)}))
  bf16_updates, bf16_state = runs[jnp.bfloat16]
  f32_updates, f32_state = runs[jnp.float32]
  assert bf16_state.nu["w"].dtype == jnp.float32
  # V_k = 4 (1 − ρ^k) = 3.459 after 2000 steps (ρ = 1 in bfloat16 would give 8).
  np.testing.assert_allclose(bf16_state.nu["w"], 4 * (1 - 0.999**2000), rtol=1e-4)
  np.testing.assert_array_equal(bf16_state.nu["w"], f32_state.nu["w"])
  assert bf16_updates["w"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(bf16_updates["w"], f32_updates["w"].astype(jnp.bfloat16))
