"""Argument checks of every public diagnostic: a bad argument raises an error naming it.

Each case below gave a silent wrong answer or an error that blamed something else before the
checks existed (a NaN or negative density, a wrapped filter axis, a broadcast direction, a
division by zero on an empty batch, ``num_iterations`` blamed on ``k``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from fsgld_optax import diagnostics

matplotlib.use("Agg")

SCALES = jnp.arange(1.0, 5.0)
PARAMS = jnp.ones(4)
MATRIX_PARAMS = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}


def loss_fn(p: jax.Array) -> jax.Array:
  return 0.5 * jnp.sum(SCALES * p**2)


def batch_loss(p: jax.Array, batch: jax.Array) -> jax.Array:
  return 0.5 * jnp.mean(jnp.sum(SCALES * (p * batch) ** 2, axis=-1))


def density(**kwargs: Any) -> Any:
  return diagnostics.spectral_density(loss_fn, PARAMS, 0, **{"lanczos_order": 4, **kwargs})


BAD_FLOATS = [0.0, -1.0, jnp.bfloat16(-1.0), jnp.float16(0.0), True, "1.0", float("nan"), 1e39]
BAD_COUNTS = [0, -1, 2.5, 2.0, True, "3", None, jnp.ones(2, jnp.int32)]

hvp = functools.partial(diagnostics.hvp, loss_fn, PARAMS)
trace = functools.partial(diagnostics.hutchinson_trace, loss_fn, PARAMS)
top = functools.partial(diagnostics.top_eigenvalues, loss_fn, PARAMS, 0)
direction = functools.partial(diagnostics.random_direction, 0, MATRIX_PARAMS)
slice_1d = functools.partial(diagnostics.loss_slice_1d, loss_fn, PARAMS)
slice_2d = functools.partial(diagnostics.loss_slice_2d, loss_fn, PARAMS)
batched_hvp = functools.partial(diagnostics.hvp, batch_loss, PARAMS, PARAMS)
plot_1d = diagnostics.plot_slice_1d
plot_2d = functools.partial(diagnostics.plot_slice_2d, jnp.ones(2), jnp.ones(2), jnp.ones((2, 2)))
V2, V3 = jnp.ones(2), jnp.ones(3)

# (argument named in the error, call that must raise)
CASES: list[tuple[str, Callable[[], Any]]] = [
  *[("kernel_width", functools.partial(density, kernel_width=v)) for v in BAD_FLOATS],
  ("kernel_width", functools.partial(density, kernel_width=jnp.ones(2))),
  ("kernel_width", functools.partial(density, kernel_width=1e-50)),  # Underflows to 0 in f32.
  ("kernel_width", functools.partial(density, kernel_width=1j)),
  *[("num_probes", functools.partial(density, num_probes=v)) for v in BAD_COUNTS],
  *[("lanczos_order", functools.partial(density, lanczos_order=v)) for v in BAD_COUNTS],
  *[("grid", functools.partial(density, grid=v)) for v in (0, 1, -3, True, "10", jnp.ones((2, 2)))],
  ("grid", functools.partial(density, grid=jnp.zeros(0))),
  ("grid", functools.partial(density, grid=jnp.array([True, False]))),
  *[("num_samples", functools.partial(trace, 0, num_samples=v)) for v in (1, *BAD_COUNTS)],
  *[("map_batch_size", functools.partial(trace, 0, map_batch_size=v)) for v in (0, 1.5, True, "2")],
  *[("num_iterations", functools.partial(top, k=1, num_iterations=v)) for v in BAD_COUNTS],
  *[("k", functools.partial(top, k=v)) for v in BAD_COUNTS],
  ("k", functools.partial(top, k=3, num_iterations=2)),
  ("k", functools.partial(top, k=5, num_iterations=10)),  # Capped at the 4 parameters.
  *[("key", functools.partial(trace, v)) for v in (2**63, True, None, "0", 1.5)],
  ("key", functools.partial(diagnostics.random_direction, -(2**63) - 1, MATRIX_PARAMS)),
  *[("filter_axis", functools.partial(direction, filter_axis=v)) for v in (2, -3, 5, True, 1.0)],
  ("v", functools.partial(diagnostics.hvp, loss_fn, jnp.ones((3, 4)), jnp.ones(4))),
  ("v", functools.partial(hvp, jnp.ones((1, 4)))),
  ("v", functools.partial(diagnostics.hvp, loss_fn, {"a": PARAMS}, PARAMS)),
  ("v", functools.partial(hvp, jnp.ones(4, bool))),
  ("v", functools.partial(hvp, jnp.ones(4, jnp.complex64))),
  ("direction", functools.partial(diagnostics.loss_slice_1d, loss_fn, jnp.ones((3, 4)), V2, V2)),
  ("direction_x", functools.partial(slice_2d, jnp.ones(1), PARAMS, V2, V2)),
  ("direction_y", functools.partial(slice_2d, PARAMS, jnp.ones((4, 1)), V2, V2)),
  ("alphas", functools.partial(slice_1d, PARAMS, jnp.array([True, False]))),
  ("alphas", functools.partial(slice_1d, PARAMS, "0.5")),
  ("alphas", functools.partial(slice_1d, PARAMS, 0.5)),
  ("betas", functools.partial(slice_2d, PARAMS, PARAMS, V2, None)),
  ("map_batch_size", functools.partial(slice_1d, PARAMS, V2, map_batch_size=0)),
  ("params", functools.partial(diagnostics.hutchinson_trace, loss_fn, jnp.ones(4, jnp.int32), 0)),
  ("params", functools.partial(diagnostics.top_eigenvalues, loss_fn, PARAMS.astype(complex), 0)),
  ("params", functools.partial(diagnostics.random_direction, 0, {})),
  ("loss_fn", functools.partial(diagnostics.hvp, "loss", PARAMS, PARAMS)),
  # Zero-size data: the mean loss over no examples is 0 / 0.
  ("batches", functools.partial(batched_hvp, batches=[jnp.zeros((0, 4))])),
  ("batches", functools.partial(batched_hvp, batches=[jnp.ones((3, 4)), jnp.zeros((0, 4))])),
  ("batches", functools.partial(batched_hvp, batches=jnp.zeros((0, 3, 4)))),
  ("batches", functools.partial(batched_hvp, batches=jnp.zeros((2, 0, 4)))),
  ("batches", functools.partial(trace, 0, batches=jnp.zeros((2, 0, 4)))),
  ("batches", functools.partial(top, k=1, batches=[])),
  ("batches", functools.partial(slice_1d, PARAMS, V2, batches=jnp.zeros((0, 2, 4)))),
  # Plots.
  ("losses", functools.partial(plot_1d, V3, jnp.ones(4), ax=Figure().add_subplot())),
  ("log_scale", functools.partial(plot_1d, V3, V3, log_scale="yes")),
  ("label", functools.partial(plot_1d, V3, V3, label=3)),
  ("filled", functools.partial(plot_2d, filled=None)),
  ("levels", functools.partial(plot_2d, levels=0)),
  ("levels", functools.partial(plot_2d, levels=[1.0, 0.5])),
  ("spectrum", functools.partial(diagnostics.plot_spectrum, (V3, V3))),
  ("eigenvalues", functools.partial(diagnostics.plot_spectrum, eigenvalues=["a"])),
  ("log_scale", functools.partial(diagnostics.plot_spectrum, eigenvalues=[1.0], log_scale=1)),
]


@pytest.mark.parametrize(
  ("name", "call"), CASES, ids=[f"{i}-{name}" for i, (name, _) in enumerate(CASES)]
)
def test_bad_argument_raises_an_error_naming_it(name: str, call: Callable[[], Any]) -> None:
  with pytest.raises((ValueError, TypeError), match=rf"\b{name}\b") as info:
    call()
  # Raised by the argument check, not by JAX or matplotlib deep inside the computation.
  assert "fsgld_optax" in str(info.traceback[-1].path)


def test_num_iterations_below_one_is_not_blamed_on_k() -> None:
  with pytest.raises(ValueError, match="num_iterations") as info:
    diagnostics.top_eigenvalues(loss_fn, PARAMS, 0, k=1, num_iterations=0)
  assert not str(info.value).startswith("k ")


def test_good_arguments_of_every_accepted_kind_still_work() -> None:
  # NumPy integers and concrete integer scalars for counts, bf16 and int scalars for the width.
  reference = density(kernel_width=0.5, num_probes=2, grid=16)
  for kwargs in (
    {"kernel_width": jnp.bfloat16(0.5), "num_probes": np.int64(2), "grid": np.int32(16)},
    {"kernel_width": np.float64(0.5), "num_probes": jnp.array(2), "grid": 16},
  ):
    result = density(**kwargs)
    np.testing.assert_allclose(result.density, reference.density, rtol=1e-6)
  est = diagnostics.top_eigenvalues(loss_fn, PARAMS, 0, k=np.int64(1), num_iterations=np.int8(4))
  np.testing.assert_allclose(est.eigenvalues, [4.0], rtol=1e-5)
  # An integer direction is cast to the parameters' dtype; the same slice as a float one.
  np.testing.assert_array_equal(
    diagnostics.loss_slice_1d(loss_fn, PARAMS, jnp.ones(4, jnp.int32), jnp.ones(2)),
    diagnostics.loss_slice_1d(loss_fn, PARAMS, jnp.ones(4), jnp.ones(2)),
  )


def test_traced_bad_kernel_width_gives_nan_not_a_wrong_density() -> None:
  # Under jit the width cannot be checked; a bad one must not give a finite wrong density.
  fn = jax.jit(lambda w: density(kernel_width=w, grid=8).density)
  for width in (0.0, -0.5, float("inf"), float("nan")):
    assert np.all(np.isnan(fn(jnp.float32(width)))), width
  assert np.all(np.isfinite(fn(jnp.float32(0.5))))


def test_filter_axis_in_range_negative_and_positive_agree() -> None:
  # -1 and 1 name the same axis of a 2-D leaf; only out-of-range values are rejected.
  a = diagnostics.random_direction(0, MATRIX_PARAMS, filter_axis=-1)
  b = diagnostics.random_direction(0, MATRIX_PARAMS, filter_axis=1)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_checks_accept_traced_arrays_under_jit() -> None:
  # The checks look at shapes and dtypes only, so every array argument may be traced.
  trace_fn = jax.jit(functools.partial(diagnostics.hutchinson_trace, loss_fn, num_samples=4))
  assert float(trace_fn(PARAMS, 3).trace) == pytest.approx(10.0, rel=1e-5)
  top_fn = jax.jit(functools.partial(diagnostics.top_eigenvalues, loss_fn, k=1, num_iterations=4))
  np.testing.assert_allclose(top_fn(PARAMS, jax.random.key(0)).eigenvalues, [4.0], rtol=1e-5)
  slice_fn = jax.jit(functools.partial(diagnostics.loss_slice_1d, loss_fn))
  np.testing.assert_allclose(slice_fn(PARAMS, PARAMS, jnp.ones(2)), [20.0, 20.0], rtol=1e-6)
  direction_fn = jax.jit(diagnostics.random_direction)
  assert direction_fn(0, MATRIX_PARAMS)["w"].shape == (2, 3)
  np.testing.assert_allclose(
    jax.jit(functools.partial(diagnostics.hvp, loss_fn))(PARAMS, PARAMS), SCALES
  )
