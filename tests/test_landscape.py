"""Loss-landscape slices and their plots, against plain Python loops over the same points."""

import functools

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

from fsgld_optax import diagnostics

matplotlib.use("Agg")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_params() -> dict:
  """Flax-layout leaves: a conv kernel (HWIO), a dense kernel (in, out), biases, a scalar."""
  rng = np.random.default_rng(0)
  return {
    "conv": {
      "kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32),
      "bias": jnp.ones(4),
    },
    "dense": {
      "kernel": jnp.asarray(rng.normal(size=(5, 3)) * np.arange(1, 4), jnp.float32),
      "bias": jnp.ones(3),
    },
    "scale": jnp.float32(2.0),
  }


def batch_loss(params: dict, x: jax.Array) -> jax.Array:
  """A smooth non-quadratic loss that touches every leaf."""
  y = jnp.tanh(x @ params["dense"]["kernel"] + params["dense"]["bias"][None])
  conv = jnp.sum(params["conv"]["kernel"] ** 2) + jnp.sum(params["conv"]["bias"])
  return jnp.mean(y**2) * params["scale"] + 0.01 * conv


def reference_loss_at(params: dict, steps: list[float], directions: list[dict], x) -> float:
  shifted = jax.tree.map(
    lambda w, *ds: w + sum(s * d for s, d in zip(steps, ds, strict=True)), params, *directions
  )
  return float(batch_loss(shifted, x))


DATA = jnp.asarray(np.random.default_rng(1).normal(size=(12, 5)), jnp.float32)


@pytest.mark.parametrize("filter_axis", [-1, 0])
def test_random_direction_is_filter_normalised(filter_axis):
  params = make_params()
  direction = diagnostics.random_direction(jax.random.key(0), params, filter_axis=filter_axis)
  assert jax.tree.structure(direction) == jax.tree.structure(params)
  for path in (("conv", "kernel"), ("dense", "kernel")):
    w, d = params[path[0]][path[1]], direction[path[0]][path[1]]
    assert d.dtype == w.dtype and d.shape == w.shape
    axis = filter_axis % w.ndim
    others = tuple(i for i in range(w.ndim) if i != axis)
    np.testing.assert_allclose(_norms(d, others), _norms(w, others), rtol=1e-5)
    # The direction is not just the weights rescaled: it is random within each filter.
    assert np.abs(np.asarray(d) - np.asarray(w)).max() > 1e-2
  # Biases and the scalar are left out of the slice (zero direction).
  for leaf in (direction["conv"]["bias"], direction["dense"]["bias"], direction["scale"]):
    np.testing.assert_array_equal(leaf, 0.0)


def _norms(x: jax.Array, axes: tuple[int, ...]) -> np.ndarray:
  return np.sqrt(np.sum(np.asarray(x, np.float64) ** 2, axis=axes))


def test_random_direction_depends_on_the_key_and_keeps_dtypes():
  params = {"w": jnp.ones((4, 3), jnp.bfloat16), "b": jnp.zeros(3, jnp.bfloat16)}
  a = diagnostics.random_direction(0, params)
  b = diagnostics.random_direction(jax.random.key(0), params)
  c = diagnostics.random_direction(1, params)
  assert a["w"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(a["w"], b["w"])
  assert not np.array_equal(np.asarray(a["w"]), np.asarray(c["w"]))


def test_loss_slice_1d_matches_a_python_loop():
  params = make_params()
  direction = diagnostics.random_direction(1, params)
  alphas = jnp.linspace(-1.0, 1.0, 7)
  loss = functools.partial(batch_loss, x=DATA)
  losses = jax.jit(functools.partial(diagnostics.loss_slice_1d, loss))(params, direction, alphas)
  expected = [reference_loss_at(params, [float(a)], [direction], DATA) for a in alphas]
  assert losses.shape == (7,)
  np.testing.assert_allclose(losses, expected, rtol=1e-5)
  np.testing.assert_allclose(losses[3], loss(params), rtol=1e-6)  # alpha = 0 is the centre


def test_loss_slice_1d_over_batches_and_vectorised():
  params = make_params()
  direction = diagnostics.random_direction(2, params)
  alphas = jnp.linspace(-0.5, 0.5, 5)
  full = diagnostics.loss_slice_1d(functools.partial(batch_loss, x=DATA), params, direction, alphas)
  stacked = diagnostics.loss_slice_1d(
    batch_loss, params, direction, alphas, batches=DATA.reshape(3, 4, 5), map_batch_size=2
  )
  ragged = diagnostics.loss_slice_1d(
    batch_loss, params, direction, alphas, batches=[DATA[:3], DATA[3:]]
  )
  np.testing.assert_allclose(stacked, full, rtol=1e-5)
  np.testing.assert_allclose(ragged, full, rtol=1e-5)


def test_loss_slice_2d_matches_a_python_loop():
  params = make_params()
  kx, ky = jax.random.split(jax.random.key(3))
  dx = diagnostics.random_direction(kx, params)
  dy = diagnostics.random_direction(ky, params)
  alphas = jnp.linspace(-1.0, 1.0, 4)
  betas = jnp.linspace(-0.5, 0.5, 3)  # a different length catches transposed axes
  loss = functools.partial(batch_loss, x=DATA)
  losses = jax.jit(functools.partial(diagnostics.loss_slice_2d, loss, map_batch_size=5))(
    params, dx, dy, alphas, betas
  )
  expected = [
    [reference_loss_at(params, [float(a), float(b)], [dx, dy], DATA) for b in betas] for a in alphas
  ]
  assert losses.shape == (4, 3)
  np.testing.assert_allclose(losses, expected, rtol=1e-5)


def test_slices_reject_non_vector_steps():
  loss = lambda p: jnp.sum(p**2)
  with pytest.raises(ValueError, match="alphas"):
    diagnostics.loss_slice_1d(loss, jnp.ones(2), jnp.ones(2), jnp.ones((2, 2)))
  with pytest.raises(ValueError, match="betas"):
    diagnostics.loss_slice_2d(loss, jnp.ones(2), jnp.ones(2), jnp.ones(2), jnp.ones(3), 1.0)


def test_plot_slices_write_png(tmp_path):
  import matplotlib.pyplot as plt

  alphas = np.linspace(-1.0, 1.0, 9)
  betas = np.linspace(-1.0, 1.0, 7)
  ax1 = diagnostics.plot_slice_1d(alphas, alphas**2, label="start", log_scale=True)
  ax1 = diagnostics.plot_slice_1d(alphas, 2 * alphas**2 + 0.1, ax=ax1, label="end")
  ax2 = diagnostics.plot_slice_2d(alphas, betas, alphas[:, None] ** 2 + 2 * betas[None] ** 2)
  ax3 = diagnostics.plot_slice_2d(
    alphas, betas, alphas[:, None] ** 2 + betas[None] ** 2, filled=True, levels=[0.0, 0.5, 1, 2]
  )
  assert len(ax1.lines) == 3  # two slices and the alpha = 0 marker
  for name, ax in (("slice1d", ax1), ("slice2d", ax2), ("slice2d_filled", ax3)):
    path = tmp_path / f"{name}.png"
    ax.figure.savefig(path)
    plt.close(ax.figure)
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000
  with pytest.raises(ValueError, match="losses must have shape"):
    diagnostics.plot_slice_2d(alphas, betas, np.zeros((7, 9)))
