"""Curvature diagnostics against dense Hessians (``jax.hessian`` on ravelled parameters).

Two small models: a plain-JAX tanh MLP with 435 parameters and a Flax Linen CNN with
BatchNorm in evaluation mode (batch statistics closed over) with 147 parameters.
"""

import functools
import itertools
import math
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from fsgld_optax import _randomness, diagnostics
from fsgld_optax.diagnostics import _lanczos

matplotlib.use("Agg")


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  log_probs = jax.nn.log_softmax(logits)
  return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))


def mlp_apply(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
  for layer in params[:-1]:
    x = jnp.tanh(x @ layer["w"] + layer["b"][None])
  return x @ params[-1]["w"] + params[-1]["b"][None]


def mlp_params(rng: np.random.Generator, sizes: tuple[int, ...]) -> list[dict[str, jax.Array]]:
  layers = []
  for fan_in, fan_out in itertools.pairwise(sizes):
    w = rng.normal(size=(fan_in, fan_out)) / math.sqrt(fan_in)
    layers.append({"w": jnp.asarray(w, jnp.float32), "b": jnp.full((fan_out,), 0.1)})
  return layers


class TinyCNN(nn.Module):
  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.Conv(6, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train)(x)
    x = jnp.tanh(x).mean(axis=(1, 2))
    return nn.Dense(3)(x)


class Problem:
  """A loss with both call forms, its parameters and the dense Hessian."""

  def __init__(
    self, batch_loss: Callable[[Any, tuple[jax.Array, jax.Array]], jax.Array], params: Any, data
  ):
    self.batch_loss = batch_loss
    self.params = params
    self.data = data
    self.loss = functools.partial(_full_loss, batch_loss, data=data)
    flat, unravel = ravel_pytree(params)
    self.hessian = np.asarray(
      jax.jit(jax.hessian(lambda f: self.loss(unravel(f))))(flat), np.float64
    )
    self.eigenvalues = np.linalg.eigvalsh(self.hessian)[::-1]


def _full_loss(batch_loss: Callable, params: Any, *, data: Any) -> jax.Array:
  return batch_loss(params, data)


def _dataset(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  y = jnp.asarray(rng.integers(0, 3, size=shape[0]), jnp.int32)
  return x, y


@functools.cache
def mlp_problem() -> Problem:
  """A tanh MLP 6-16-16-3 (435 parameters) with cross-entropy on 64 random examples."""
  rng = np.random.default_rng(0)
  data = _dataset(rng, (64, 6))
  params = mlp_params(rng, (6, 16, 16, 3))

  def batch_loss(p: Any, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    return cross_entropy(mlp_apply(p, batch[0]), batch[1])

  return Problem(batch_loss, params, data)


@functools.cache
def cnn_problem() -> Problem:
  """Conv 3x3 (6 filters), BatchNorm in evaluation mode, tanh, mean pool, dense: 147 params."""
  rng = np.random.default_rng(1)
  data = _dataset(rng, (32, 6, 6, 2))
  model = TinyCNN()
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), data[0])

  def draw(path: tuple, s: jax.ShapeDtypeStruct) -> jax.Array:
    name = path[-1].key
    if name == "kernel":
      value = rng.normal(size=s.shape) / math.sqrt(math.prod(s.shape[:-1]))
    elif name in ("scale", "var"):  # positive BatchNorm scales and running variances
      value = rng.uniform(0.5, 2.0, size=s.shape)
    else:  # biases, BatchNorm offsets and running means
      value = 0.3 * rng.normal(size=s.shape)
    return jnp.asarray(value, s.dtype)

  variables = jax.tree_util.tree_map_with_path(draw, shapes)
  batch_stats = variables["batch_stats"]

  def batch_loss(p: Any, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    logits = model.apply({"params": p, "batch_stats": batch_stats}, batch[0], train=False)
    return cross_entropy(jnp.asarray(logits), batch[1])

  return Problem(batch_loss, variables["params"], data)


@functools.cache
def quadratic() -> tuple[Callable[[Any], jax.Array], dict[str, jax.Array], np.ndarray]:
  """0.5 θᵀ A θ on a two-leaf pytree (7 parameters) with a dense symmetric A."""
  rng = np.random.default_rng(2)
  m = rng.normal(size=(7, 7))
  a = (m + m.T) / 2
  params = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}
  a_jax = jnp.asarray(a, jnp.float32)

  def loss(p: dict[str, jax.Array]) -> jax.Array:
    theta = ravel_pytree(p)[0]
    return 0.5 * theta @ a_jax @ theta

  return loss, params, a


def direction_like(params: Any) -> Any:
  """A fixed, non-random tangent vector (no PRNG compilation needed)."""
  return jax.tree.map(
    lambda x: jnp.sin(jnp.arange(x.size, dtype=x.dtype) + 1.0).reshape(x.shape), params
  )


PROBLEMS = {"mlp": mlp_problem, "cnn_batchnorm_eval": cnn_problem}


def flat(tree: Any) -> np.ndarray:
  return np.asarray(ravel_pytree(tree)[0], np.float64)


# ---------------------------------------------------------------------------------------------
# Public API.


def test_public_names_import_and_have_docstrings():
  for name in diagnostics.__all__:
    obj = getattr(diagnostics, name)
    assert obj.__doc__ and obj.__doc__.strip(), name
  assert diagnostics.__doc__


def test_importing_diagnostics_does_not_import_matplotlib():
  code = "import sys, fsgld_optax.diagnostics; print('matplotlib' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# Hessian-vector products.


@pytest.mark.parametrize("name", PROBLEMS)
def test_hvp_matches_dense_hessian(name):
  problem = PROBLEMS[name]()
  v = direction_like(problem.params)
  hv = jax.jit(functools.partial(diagnostics.hvp, problem.loss))(problem.params, v)
  assert jax.tree.structure(hv) == jax.tree.structure(problem.params)
  expected = problem.hessian @ flat(v)
  np.testing.assert_allclose(flat(hv), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_chunked_hvp_equals_full_batch_hvp():
  problem = mlp_problem()
  x, y = problem.data
  v = direction_like(problem.params)
  full = problem.hessian @ flat(v)
  stacked = (x.reshape(4, 16, 6), y.reshape(4, 16))
  # Unequal chunks: an unweighted mean of the three chunk products would differ from `full`.
  ragged = [(x[:10], y[:10]), (x[10:40], y[10:40]), (x[40:], y[40:])]
  hvp_batches = jax.jit(functools.partial(diagnostics.hvp, problem.batch_loss))
  for batches in (stacked, ragged):
    chunked = flat(hvp_batches(problem.params, v, batches=batches))
    np.testing.assert_allclose(chunked, full, rtol=1e-4, atol=1e-5 * np.abs(full).max())


@pytest.mark.parametrize(
  "batches",
  [[], (jnp.ones(3), jnp.ones(4)), jnp.float32(1.0)],
  ids=["empty-list", "mismatched-chunks", "scalar"],
)
def test_invalid_batches_raise(batches):
  loss = lambda p, b: jnp.sum(p**2) * jnp.mean(b)
  with pytest.raises(ValueError, match="batches"):
    diagnostics.hvp(loss, jnp.ones(2), jnp.ones(2), batches=batches)


# ---------------------------------------------------------------------------------------------
# Random keys.


def test_key_forms_canonicalise_to_the_same_typed_key():
  expected = jax.random.key_data(jax.random.key(7))
  for key in (7, np.int64(7), jnp.int32(7), jax.random.key(7), expected):
    np.testing.assert_array_equal(jax.random.key_data(_randomness.canonical_key(key)), expected)
  for bad in (0.5, True, jnp.ones(3), jax.random.split(jax.random.key(0), 2)):
    with pytest.raises((TypeError, ValueError), match="key"):
      _randomness.canonical_key(bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Hutchinson trace.


def test_hutchinson_samples_are_quadratic_forms_of_the_documented_probes():
  loss, params, a = quadratic()
  keys = jax.random.split(jax.random.key(3), 8)
  draw = lambda k: ravel_pytree(optax.tree.random_like(k, params, jax.random.rademacher))[0]
  probes = np.asarray(jax.jit(jax.vmap(draw))(keys), np.float64)
  expected = np.einsum("si,ij,sj->s", probes, a, probes)
  # Sequential and vectorised probes, with an int seed traced under jit.
  for map_batch_size in (None, 3):
    estimate = functools.partial(
      diagnostics.hutchinson_trace, loss, num_samples=8, map_batch_size=map_batch_size
    )
    est = jax.jit(estimate)(params, jnp.int32(3))
    np.testing.assert_allclose(np.asarray(est.samples), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(est.trace, expected.mean(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(est.stderr, expected.std(ddof=1) / math.sqrt(8), rtol=1e-4)


def test_hutchinson_trace_within_three_standard_errors_of_exact_trace():
  problem = mlp_problem()
  estimate = functools.partial(diagnostics.hutchinson_trace, problem.loss, num_samples=64)
  est = jax.jit(estimate)(problem.params, jax.random.key(4))
  exact = np.trace(problem.hessian)
  # Monte-Carlo check with a fixed key: |estimate - tr H| < 3 standard errors.
  assert abs(float(est.trace) - exact) < 3.0 * float(est.stderr)
  # The reported standard error matches the exact Rademacher variance 2 Σ_{i≠j} H_ij²: the
  # sample standard deviation of 64 draws is within ±(15-20)% at one sigma, so a factor of
  # 1.6 either way is a wide margin that still catches a missing sqrt(num_samples).
  off_diagonal = problem.hessian - np.diag(np.diag(problem.hessian))
  exact_stderr = math.sqrt(2.0 * np.sum(off_diagonal**2) / 64)
  assert exact_stderr / 1.6 < float(est.stderr) < 1.6 * exact_stderr


def test_hutchinson_is_exact_for_a_diagonal_hessian():
  scales = jnp.array([1.0, 2.0, 3.0, -1.5])
  loss = lambda p: 0.5 * jnp.sum(scales * p**2)
  est = diagnostics.hutchinson_trace(loss, jnp.zeros(4), 0, num_samples=4)
  np.testing.assert_allclose(np.asarray(est.samples), 4.5, rtol=1e-6)
  assert float(est.stderr) == 0.0


def test_hutchinson_rejects_a_single_sample():
  with pytest.raises(ValueError, match="num_samples"):
    diagnostics.hutchinson_trace(lambda p: jnp.sum(p**2), jnp.ones(2), 0, num_samples=1)


# ---------------------------------------------------------------------------------------------
# Top eigenvalues.


@pytest.mark.parametrize("name", PROBLEMS)
def test_top_eigenvalues_match_dense_eigenvalues(name):
  problem = PROBLEMS[name]()
  top = jax.jit(functools.partial(diagnostics.top_eigenvalues, problem.loss, k=5))
  est = top(problem.params, jax.random.key(5))
  exact = problem.eigenvalues[:5]
  np.testing.assert_allclose(np.asarray(est.eigenvalues), exact, rtol=1e-3)
  assert np.all(np.diff(np.asarray(est.eigenvalues)) <= 0)
  # Eigenvectors: unit-norm pytrees whose dense residual is small and within the reported one.
  vectors = np.stack(
    [flat(jax.tree.map(lambda leaf, i=i: leaf[i], est.eigenvectors)) for i in range(5)]
  )
  np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
  residuals = np.linalg.norm(
    vectors @ problem.hessian - np.asarray(est.eigenvalues)[:, None] * vectors, axis=1
  )
  rounding = 1e-4 * exact[0]
  assert np.all(residuals <= np.asarray(est.residual_norms) + rounding)
  assert np.all(residuals <= 1e-3 * exact[0])


def test_top_eigenvalues_over_stacked_batches():
  problem = mlp_problem()
  x, y = problem.data
  est = jax.jit(functools.partial(diagnostics.top_eigenvalues, problem.batch_loss, k=5))(
    problem.params, 5, batches=(x.reshape(4, 16, 6), y.reshape(4, 16))
  )
  np.testing.assert_allclose(np.asarray(est.eigenvalues), problem.eigenvalues[:5], rtol=1e-3)


def test_lanczos_breakdown_keeps_ritz_values_in_the_spectrum():
  # Three distinct eigenvalues, each 20 times: the Krylov space of any start vector is
  # invariant after three steps, so later steps must restart instead of dividing by ~0.
  scales = jnp.tile(jnp.array([1.0, 2.0, 3.0]), 20)
  loss = lambda p: 0.5 * jnp.sum(scales * p**2)
  est = diagnostics.top_eigenvalues(loss, jnp.zeros(60), 0, k=10, num_iterations=10)
  values = np.asarray(est.eigenvalues)
  np.testing.assert_allclose(values[:3], 3.0, rtol=1e-5)
  assert np.all((values >= 1.0 - 1e-5) & (values <= 3.0 + 1e-5))
  # Ritz pairs from completed Krylov blocks are exact.
  np.testing.assert_allclose(np.asarray(est.residual_norms)[:3], 0.0, atol=1e-5)


def test_lanczos_basis_is_orthonormal_and_factorises_the_operator():
  m = np.random.default_rng(6).normal(size=(40, 40))
  a = jnp.asarray(m + m.T, jnp.float32)
  tri = _lanczos.lanczos(lambda x: a @ x, jnp.ones(40), 12, jax.random.key(0))
  q = np.asarray(tri.basis, np.float64)
  np.testing.assert_allclose(q @ q.T, np.eye(12), atol=1e-5)
  np.testing.assert_allclose(q @ np.asarray(a) @ q.T, np.asarray(tri.dense()), atol=1e-4)


def test_top_eigenvalues_rejects_k_above_the_iteration_count():
  with pytest.raises(ValueError, match="k must lie"):
    diagnostics.top_eigenvalues(lambda p: jnp.sum(p**2), jnp.ones(3), 0, k=4)


# ---------------------------------------------------------------------------------------------
# Spectral density.


def _normal_cdf(z: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))


@functools.cache
def mlp_spectrum() -> tuple[diagnostics.SpectralDensity, float, np.ndarray]:
  """SLQ of the MLP Hessian: 16 probes, 64 Lanczos steps, kernel width 1% of the spectrum."""
  problem = mlp_problem()
  lam = problem.eigenvalues
  sigma = 0.01 * (lam[0] - lam[-1])
  grid = np.linspace(lam[-1] - 8 * sigma, lam[0] + 8 * sigma, 2001)
  sd = jax.jit(
    functools.partial(diagnostics.spectral_density, problem.loss, num_probes=16, lanczos_order=64)
  )(problem.params, jax.random.key(8), grid=jnp.asarray(grid), kernel_width=sigma)
  return sd, sigma, grid


def test_spectral_density_integrates_to_one_on_its_default_grid():
  m = np.random.default_rng(9).normal(size=(60, 60))
  a = jnp.asarray(m @ m.T / 60 - 0.5 * np.eye(60), jnp.float32)
  loss = lambda p: 0.5 * p @ a @ p
  sd = diagnostics.spectral_density(loss, jnp.zeros(60), 9, num_probes=3, lanczos_order=20)
  assert sd.grid.shape == sd.density.shape == (512,)
  assert sd.nodes.shape == sd.weights.shape == (3, 20)
  # Default grid: spacing ~0.2 kernel widths and 5-width padding, so the trapezoid rule and the
  # tails together miss far less than 1e-3 of the mass.
  np.testing.assert_allclose(np.trapezoid(sd.density, sd.grid), 1.0, atol=1e-3)
  np.testing.assert_allclose(np.asarray(sd.weights).sum(axis=1), 1.0, rtol=1e-5)
  assert float(jnp.min(sd.density)) >= 0.0
  with pytest.raises(ValueError, match="grid"):
    diagnostics.spectral_density(loss, jnp.zeros(60), 9, grid=jnp.zeros((2, 2)))


def test_spectral_density_first_moment_is_a_hutchinson_sample():
  # Gauss quadrature is exact for linear functions: sum_j tau_j theta_j = v^T H v / d for the
  # documented Rademacher probe v of each probe key.
  problem = mlp_problem()
  sd, _, _ = mlp_spectrum()
  d = problem.hessian.shape[0]

  def probe(probe_key: jax.Array) -> jax.Array:
    sign_key, _ = jax.random.split(probe_key)
    return jax.random.rademacher(sign_key, (d,), jnp.float32)

  probes = np.asarray(jax.jit(jax.vmap(probe))(jax.random.split(jax.random.key(8), 16)))
  expected = np.einsum("si,ij,sj->s", probes, problem.hessian, probes) / d
  moments = np.sum(np.asarray(sd.weights, np.float64) * np.asarray(sd.nodes), axis=1)
  np.testing.assert_allclose(moments, expected, rtol=1e-4, atol=1e-6)


def test_spectral_density_interval_masses_match_dense_eigenvalues():
  problem = mlp_problem()
  sd, sigma, grid = mlp_spectrum()
  lam = problem.eigenvalues
  d = lam.size
  density = np.asarray(sd.density, np.float64)
  np.testing.assert_allclose(np.trapezoid(density, grid), 1.0, atol=1e-4)
  # Intervals: the negative tail, the bulk around zero, the positive tail and the outliers. The
  # cuts lie where this fixed spectrum is sparse (half the eigenvalues sit in [-0.01, 0.01]).
  cuts = np.searchsorted(grid, [-0.1, 0.1, 0.6])
  edges = [0, *cuts, grid.size - 1]
  _, vecs = np.linalg.eigh(problem.hessian)
  lam_ascending = lam[::-1]
  for lo, hi in itertools.pairwise(edges):
    a, b = grid[lo], grid[hi]
    mass = np.trapezoid(density[lo : hi + 1], grid[lo : hi + 1])
    # SLQ estimates the dense eigenvalue histogram smoothed with the same kernel,
    # (1/d) tr f(H) with f(λ) = Φ((b-λ)/σ) - Φ((a-λ)/σ). With the cuts in sparse regions the
    # smoothing moves less than 1% of the mass across an edge, so this is the histogram itself.
    f = _normal_cdf((b - lam_ascending) / sigma) - _normal_cdf((a - lam_ascending) / sigma)
    histogram = np.mean((lam >= a) & (lam < b))
    assert abs(f.mean() - histogram) < 0.01
    # Tolerance from the exact Monte-Carlo standard error of SLQ with normalised Rademacher
    # probes, Var[v^T F v / d] = 2 (||F||_F^2 - Σ F_ii^2) / d^2 with F = f(H), over 16 probes:
    # 4 standard errors, plus 2e-3 for the Gauss quadrature (64 nodes) and the trapezoid rule.
    big_f = (vecs * f) @ vecs.T
    var = 2.0 * (np.sum(big_f**2) - np.sum(np.diag(big_f) ** 2)) / d**2
    tolerance = 4.0 * math.sqrt(var / 16) + 2e-3
    assert abs(mass - f.mean()) < tolerance, (a, b, mass, f.mean(), tolerance)


def test_plot_spectrum_writes_png(tmp_path):
  import matplotlib.pyplot as plt

  problem = mlp_problem()
  sd, _, _ = mlp_spectrum()
  ax = diagnostics.plot_spectrum(sd, eigenvalues=problem.eigenvalues[:5])
  path = tmp_path / "spectrum.png"
  ax.figure.savefig(path)
  plt.close(ax.figure)
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert len(ax.lines) == 6  # the density and five eigenvalue markers
  with pytest.raises(ValueError, match="spectrum"):
    diagnostics.plot_spectrum()
