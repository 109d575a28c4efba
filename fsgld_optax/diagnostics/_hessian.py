"""Matrix-free curvature diagnostics: Hessian-vector products, trace, top eigenvalues, density.

All functions take a loss closure and never form the Hessian. Without ``batches`` the closure
is ``loss_fn(params) -> scalar``; with ``batches`` it is ``loss_fn(params, batch) -> scalar``
(the mean loss over the batch), and every Hessian-vector product is averaged over the chunks
of the dataset as described in :func:`hvp`. A Flax model enters through a closure, e.g. a
Linen model with BatchNorm in evaluation mode::

    loss_fn = lambda p: cross_entropy(
        model.apply({"params": p, "batch_stats": batch_stats}, x, train=False), y)

Hessian-vector products stay on parameter pytrees. The Lanczos-based estimators ravel the
parameters into one flat vector (:func:`jax.flatten_util.ravel_pytree`) because the Krylov
basis is a dense ``(num_iterations, num_params)`` matrix; the Lanczos recurrence itself lives
in a private module that explains why it is not taken from ``matfree``. The Hutchinson
estimator is written out rather than taken from ``matfree.stochtrace``, whose samplers ravel
the probe and whose standard error uses ``ddof=0``: here probes are drawn leaf by leaf
(keeping each leaf's dtype and sharding) and the standard error uses ``ddof=1``.

Every function is a pure function of its array arguments and can be wrapped in
:func:`jax.jit` once the closure and the integer options are bound, e.g.
``jax.jit(functools.partial(hutchinson_trace, loss_fn, num_samples=16))(params, key)``.

Arguments are checked at the call, before any tracing, and a bad one raises an error that
names it (the checks live in ``_common``): counts must be ints in range, the
parameters real floating arrays, a tangent the shape of the parameters, and ``batches`` a
non-empty chunking with at least one example per chunk.

Randomness contract: ``key`` may be an int seed, a typed key from :func:`jax.random.key` or a
raw ``uint32[2]`` key, and is canonicalised once.

* :func:`hutchinson_trace` uses ``keys = jax.random.split(key, num_samples)`` and probe
  ``i`` is ``optax.tree.random_like(keys[i], params, jax.random.rademacher)``.
* :func:`top_eigenvalues` splits ``key`` into a start key and a key for restart vectors
  after a Lanczos breakdown; the start vector is ``jax.random.normal(start_key, (d,))`` on the
  ravelled parameters (the Krylov basis is flat anyway, and one draw compiles faster than one
  per leaf).
* :func:`spectral_density` uses ``keys = jax.random.split(key, num_probes)``; each is split
  into a probe key, with probe ``jax.random.rademacher(probe_key, (d,))`` on the ravelled
  parameters, and a restart key.

References:
  Pearlmutter, `Fast exact multiplication by the Hessian
  <https://doi.org/10.1162/neco.1994.6.1.147>`_, Neural Computation, 1994.

  Ghorbani, Krishnan and Xiao, `An investigation into neural net optimization via Hessian
  eigenvalue density <https://arxiv.org/abs/1901.10159>`_, ICML 2019.

  Flatness-aware stochastic gradient Langevin dynamics, `arXiv:2510.02174
  <https://arxiv.org/abs/2510.02174>`_.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from fsgld_optax.diagnostics._common import (
  KeyLike,
  LossFn,
  PyTree,
  average_over_batches,
  check_batches,
  check_callable,
  check_count,
  check_key,
  check_like,
  check_optional_count,
  check_params,
  check_positive_scalar,
  check_real_dtype,
)
from fsgld_optax.diagnostics._lanczos import lanczos

_DEFAULT_RELATIVE_KERNEL_WIDTH = 0.01
_GRID_PADDING_IN_KERNEL_WIDTHS = 5.0


class TraceEstimate(NamedTuple):
  """Hutchinson estimate of the trace of the Hessian."""

  trace: jax.Array  # (): mean of the samples.
  stderr: jax.Array  # (): standard error of the mean, sqrt(var / num_samples), ddof=1.
  samples: jax.Array  # (num_samples,): quadratic forms v_i^T H v_i.


class EigenEstimate(NamedTuple):
  """Leading Ritz pairs of the Hessian from a Lanczos factorisation."""

  eigenvalues: jax.Array  # (k,): largest Ritz values, descending.
  eigenvectors: PyTree  # like params, each leaf with a leading axis of size k; unit norm.
  residual_norms: jax.Array  # (k,): β_m |s_mi| = ||H u_i - θ_i u_i|| in exact arithmetic.


class SpectralDensity(NamedTuple):
  """Gaussian-smoothed Hessian eigenvalue density from stochastic Lanczos quadrature."""

  grid: jax.Array  # (num_points,): where the density is evaluated.
  density: jax.Array  # (num_points,): smoothed density; integrates to one over the reals.
  nodes: jax.Array  # (num_probes, lanczos_order): Ritz values of each probe.
  weights: jax.Array  # (num_probes, lanczos_order): quadrature weights; rows sum to one.
  kernel_width: jax.Array  # (): standard deviation of the Gaussian kernel.


def _hvp_closure(loss_fn: Callable[[PyTree], jax.Array], params: PyTree, v: PyTree) -> PyTree:
  return jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]


def hvp(loss_fn: LossFn, params: PyTree, v: PyTree, *, batches: PyTree | None = None) -> PyTree:
  r"""Hessian-vector product of a loss, by forward-over-reverse differentiation.

  .. math::

    H v = \nabla^2 L(\theta)\, v
        = \frac{\partial}{\partial \epsilon} \nabla L(\theta + \epsilon v) \Big|_{\epsilon=0},
    \qquad
    L(\theta) = \sum_{c} \frac{n_c}{N} L_c(\theta),

  computed as ``jax.jvp(jax.grad(loss_fn), (params,), (v,))`` at the cost of a few gradient
  evaluations. With ``batches``, each chunk's product :math:`H_c v` is computed on its own and
  the results are averaged with weights :math:`n_c / N`, so memory is that of one chunk.

  Args:
    loss_fn: ``loss_fn(params) -> scalar``, or ``loss_fn(params, batch) -> scalar`` (the mean
      loss over ``batch``) when ``batches`` is given.
    params: parameters (any pytree of float arrays) at which the Hessian is evaluated.
    v: tangent vector with the structure and leaf shapes of ``params`` (no broadcasting);
      real leaves are cast to the parameters' dtypes.
    batches: optional data chunks. A Python ``list`` of batches of possibly different sizes,
      weighted by the leading-axis length of each batch's first leaf; or a pytree whose
      leaves are stacked along a leading chunk axis, scanned with :func:`jax.lax.scan` and
      weighted equally (chunks must then have equal size).

  Returns:
    The product :math:`H v`, with the structure of ``params``.

  Raises:
    ValueError: if ``params`` has a leaf that is not a real floating array, ``v`` differs
      from ``params`` in structure or in the shape of a leaf, or ``batches`` is not a
      non-empty chunking with examples in every chunk.

  Examples:
    >>> import jax.numpy as jnp
    >>> from fsgld_optax import diagnostics
    >>> loss_fn = lambda p: 0.5 * jnp.sum(p["w"] ** 2 * jnp.array([1.0, 2.0, 3.0]))
    >>> params = {"w": jnp.ones(3)}
    >>> diagnostics.hvp(loss_fn, params, {"w": jnp.array([1.0, 1.0, -1.0])})
    {'w': Array([ 1.,  2., -3.], dtype=float32)}

    Over a dataset held in chunks, stacked (equal sizes) or as a list (any sizes):

    >>> x = jnp.arange(12.0)
    >>> data_loss = lambda p, xb: 0.5 * jnp.mean((p["w"][0] * xb) ** 2)
    >>> v = {"w": jnp.array([1.0, 0.0, 0.0])}
    >>> full = diagnostics.hvp(lambda p: data_loss(p, x), params, v)
    >>> stacked = diagnostics.hvp(data_loss, params, v, batches=x.reshape(3, 4))
    >>> ragged = diagnostics.hvp(data_loss, params, v, batches=[x[:5], x[5:]])
    >>> print(jnp.round(full["w"], 3))
    [42.167  0.     0.   ]
    >>> print(jnp.allclose(stacked["w"], full["w"]), jnp.allclose(ragged["w"], full["w"]))
    True True

  References:
    Pearlmutter, `Fast exact multiplication by the Hessian
    <https://doi.org/10.1162/neco.1994.6.1.147>`_, Neural Computation, 1994.
  """
  check_callable("loss_fn", loss_fn)
  check_params(params)
  v = check_like("v", v, params)
  check_batches(batches)
  if batches is None:
    return _hvp_closure(loss_fn, params, v)
  return average_over_batches(
    lambda batch: _hvp_closure(lambda p: loss_fn(p, batch), params, v), batches
  )


def _hessian_operator(
  loss_fn: LossFn, params: PyTree, batches: PyTree | None
) -> Callable[[PyTree], PyTree]:
  """Returns ``v -> H v`` for repeated use.

  Without ``batches`` the gradient is linearised once (:func:`jax.linearize`), so each
  product re-runs only the tangent computation. With ``batches`` every product re-visits the
  chunks, keeping memory at one chunk.
  """
  if batches is None:
    _, linear = jax.linearize(jax.grad(loss_fn), params)
    return linear
  return lambda v: hvp(loss_fn, params, v, batches=batches)


def _flat_operator(
  loss_fn: LossFn, params: PyTree, batches: PyTree | None
) -> tuple[Callable[[jax.Array], jax.Array], jax.Array, Callable[[jax.Array], PyTree]]:
  flat_params, unravel = ravel_pytree(params)
  operator = _hessian_operator(loss_fn, params, batches)

  def matvec(x: jax.Array) -> jax.Array:
    return ravel_pytree(operator(unravel(x)))[0].astype(flat_params.dtype)

  return matvec, flat_params, unravel


def hutchinson_trace(
  loss_fn: LossFn,
  params: PyTree,
  key: KeyLike,
  *,
  num_samples: int = 16,
  batches: PyTree | None = None,
  map_batch_size: int | None = None,
) -> TraceEstimate:
  r"""Hutchinson estimate of the Hessian trace with Rademacher probes.

  .. math::

    \operatorname{tr} H \approx \frac{1}{S} \sum_{i=1}^{S} v_i^\top H v_i,
    \qquad v_i \in \{-1, +1\}^d \text{ uniform},
    \qquad \mathrm{se} = \sqrt{\frac{\widehat{\operatorname{Var}}[v^\top H v]}{S}},

  where the variance uses ``ddof=1``. Each sample costs one Hessian-vector product. For a
  diagonal Hessian every sample equals the trace and the standard error is zero.

  Args:
    loss_fn: the loss closure, see :func:`hvp`.
    params: parameters at which the Hessian is evaluated.
    key: PRNG key or int seed; probe ``i`` uses ``jax.random.split(key, num_samples)[i]``.
    num_samples: number of probes :math:`S`, at least 2 (for the standard error).
    batches: optional data chunks, see :func:`hvp`.
    map_batch_size: probes evaluated together with :func:`jax.vmap` (passed to
      :func:`jax.lax.map` as ``batch_size``), an int >= 1; ``None`` evaluates them one at a
      time.

  Returns:
    A :class:`TraceEstimate` with the trace, its standard error and the samples.

  Raises:
    ValueError: if ``num_samples`` is not an int >= 2, ``map_batch_size`` not ``None`` or an
      int >= 1, or ``params``, ``key`` or ``batches`` is invalid (see :func:`hvp`).

  Examples:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from fsgld_optax import diagnostics
    >>> loss_fn = lambda p: 0.5 * jnp.sum(p["w"] ** 2 * jnp.array([1.0, 2.0, 3.0]))
    >>> est = diagnostics.hutchinson_trace(loss_fn, {"w": jnp.ones(3)}, jax.random.key(0))
    >>> print(f"{est.trace:.3f} +- {est.stderr:.3f}")
    6.000 +- 0.000

  References:
    Hutchinson, `A stochastic estimator of the trace of the influence matrix for Laplacian
    smoothing splines <https://doi.org/10.1080/03610919008812866>`_, 1990.

    Yao et al., `PyHessian: neural networks through the lens of the Hessian
    <https://arxiv.org/abs/1912.07145>`_, 2020.
  """
  check_callable("loss_fn", loss_fn)
  check_params(params)
  num_samples = check_count("num_samples", num_samples, minimum=2, why=" (for a standard error)")
  map_batch_size = check_optional_count("map_batch_size", map_batch_size)
  check_batches(batches)
  keys = jax.random.split(check_key(key), num_samples)
  operator = _hessian_operator(loss_fn, params, batches)

  def sample(probe_key: jax.Array) -> jax.Array:
    v = optax.tree.random_like(probe_key, params, jax.random.rademacher)
    return jnp.asarray(optax.tree.vdot(v, operator(v)))

  samples = jax.lax.map(sample, keys, batch_size=map_batch_size)
  trace = jnp.mean(samples)
  stderr = jnp.std(samples, ddof=1) / jnp.sqrt(num_samples)
  return TraceEstimate(trace=trace, stderr=stderr, samples=samples)


def top_eigenvalues(
  loss_fn: LossFn,
  params: PyTree,
  key: KeyLike,
  *,
  k: int = 5,
  num_iterations: int = 64,
  batches: PyTree | None = None,
) -> EigenEstimate:
  r"""Largest Hessian eigenvalues and eigenvectors by Lanczos with full reorthogonalisation.

  .. math::

    H Q_m^\top \approx Q_m^\top T_m, \qquad T_m = S \operatorname{diag}(\theta) S^\top,
    \qquad u_i = Q_m^\top s_i, \qquad \| H u_i - \theta_i u_i \| = \beta_m |s_{m i}|,

  where :math:`Q_m` holds ``num_iterations`` orthonormal Krylov vectors. The ``k``
  algebraically largest Ritz values :math:`\theta_i` are returned, so negative curvature is
  never reported as "top"; apply the function to ``-loss`` for the most negative
  eigenvalues. Extreme eigenvalues converge first; the residual norms bound the distance from
  each :math:`\theta_i` to the spectrum (up to rounding, about machine epsilon times the
  largest eigenvalue) and tell whether ``num_iterations`` suffices.
  ``num_iterations`` is capped at the number of parameters, where the factorisation is exact.

  Args:
    loss_fn: the loss closure, see :func:`hvp`.
    params: parameters at which the Hessian is evaluated.
    key: PRNG key or int seed for the start vector (and restarts after a breakdown).
    k: number of eigenpairs, an int with ``1 <= k <= min(num_iterations, d)`` for ``d``
      parameters.
    num_iterations: Lanczos steps (Hessian-vector products), an int >= 1. A few times ``k``
      is typical.
    batches: optional data chunks, see :func:`hvp`.

  Returns:
    An :class:`EigenEstimate` with descending eigenvalues, unit-norm eigenvectors stacked
    along a leading axis of each parameter leaf, and residual norms.

  Raises:
    ValueError: if ``num_iterations`` is not an int >= 1, ``k`` not an int in
      ``[1, min(num_iterations, d)]``, or ``params``, ``key`` or ``batches`` is invalid.

  Examples:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from fsgld_optax import diagnostics
    >>> scales = jnp.arange(1.0, 11.0)
    >>> loss_fn = lambda p: 0.5 * jnp.sum(scales * p ** 2)
    >>> est = diagnostics.top_eigenvalues(loss_fn, jnp.zeros(10), 0, k=3, num_iterations=10)
    >>> print(jnp.round(est.eigenvalues, 3))
    [10.  9.  8.]
    >>> print(jnp.round(jnp.abs(est.eigenvectors[0]), 3))
    [0. 0. 0. 0. 0. 0. 0. 0. 0. 1.]

  References:
    Lanczos, `An iteration method for the solution of the eigenvalue problem of linear
    differential and integral operators <https://doi.org/10.6028/jres.045.026>`_, 1950.

    Ghorbani, Krishnan and Xiao, `An investigation into neural net optimization via Hessian
    eigenvalue density <https://arxiv.org/abs/1901.10159>`_, ICML 2019.
  """
  check_callable("loss_fn", loss_fn)
  check_params(params)
  num_iterations = check_count("num_iterations", num_iterations, minimum=1)
  k = check_count("k", k, minimum=1)
  size = sum(int(np.prod(jnp.shape(leaf))) for leaf in jax.tree.leaves(params))
  num_iterations = min(num_iterations, size)
  if k > num_iterations:
    raise ValueError(
      f"k must lie in [1, num_iterations] = [1, {num_iterations}] (num_iterations is "
      f"capped at the number of parameters, {size}), got k={k}."
    )
  check_batches(batches)
  key = check_key(key)
  matvec, flat_params, unravel = _flat_operator(loss_fn, params, batches)
  start_key, restart_key = jax.random.split(key)
  v0 = jax.random.normal(start_key, flat_params.shape, flat_params.dtype)
  tridiagonal = lanczos(matvec, v0, num_iterations, restart_key)
  ritz_values, ritz_coordinates = jnp.linalg.eigh(tridiagonal.dense())
  top_values = ritz_values[::-1][:k]
  top_coordinates = ritz_coordinates[:, ::-1][:, :k]
  flat_vectors = top_coordinates.T @ tridiagonal.basis
  return EigenEstimate(
    eigenvalues=top_values,
    eigenvectors=jax.vmap(unravel)(flat_vectors),
    residual_norms=jnp.abs(tridiagonal.residual_norm * top_coordinates[-1]),
  )


def spectral_density(
  loss_fn: LossFn,
  params: PyTree,
  key: KeyLike,
  *,
  num_probes: int = 8,
  lanczos_order: int = 64,
  grid: jax.Array | int = 512,
  kernel_width: float | jax.Array | None = None,
  batches: PyTree | None = None,
) -> SpectralDensity:
  r"""Hessian eigenvalue density by stochastic Lanczos quadrature with Gaussian smoothing.

  .. math::

    \phi_\sigma(t) = \frac{1}{d} \sum_{i=1}^{d} g_\sigma(t - \lambda_i)
    \approx \frac{1}{P} \sum_{p=1}^{P} \sum_{j=1}^{m} \tau_j^{(p)}
      g_\sigma\big(t - \theta_j^{(p)}\big),
    \qquad g_\sigma(x) = \frac{e^{-x^2 / (2\sigma^2)}}{\sigma\sqrt{2\pi}},

  where :math:`\theta^{(p)}_j` are the eigenvalues of the ``m``-step Lanczos matrix started
  from the normalised Rademacher probe :math:`v_p / \|v_p\|` and :math:`\tau^{(p)}_j` the
  squared first components of its eigenvectors (Gauss quadrature nodes and weights). Each
  probe's weights sum to one, so the density integrates to one over the real line; each
  probe costs ``m`` Hessian-vector products.

  Args:
    loss_fn: the loss closure, see :func:`hvp`.
    params: parameters at which the Hessian is evaluated.
    key: PRNG key or int seed; probe ``p`` uses ``jax.random.split(key, num_probes)[p]``.
    num_probes: number of probe vectors :math:`P`, an int >= 1.
    lanczos_order: Lanczos steps :math:`m` per probe, an int >= 1 (capped at the number of
      parameters).
    grid: evaluation points (a non-empty one-dimensional real array), or their number (a
      Python int >= 2, static under :func:`jax.jit`) for an even grid spanning the Ritz
      values padded by five kernel widths on each side.
    kernel_width: standard deviation :math:`\sigma > 0` of the Gaussian kernel, a real
      scalar that stays positive and finite in the parameters' dtype; by default 1% of the
      spread of the Ritz values. Keep the grid spacing below :math:`\sigma` so the
      trapezoid rule on the grid integrates the density accurately. A traced width (under
      :func:`jax.jit`) cannot be checked: where it is not positive and finite, the density
      is NaN.
    batches: optional data chunks, see :func:`hvp`.

  Returns:
    A :class:`SpectralDensity` with the grid, the density, and each probe's nodes and
    weights (for exact interval masses or custom smoothing).

  Raises:
    ValueError: if ``num_probes`` or ``lanczos_order`` is not an int >= 1, ``grid`` neither
      an int >= 2 nor a non-empty one-dimensional real array, ``kernel_width`` not a
      positive finite real scalar, or ``params``, ``key`` or ``batches`` is invalid.

  Examples:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from fsgld_optax import diagnostics
    >>> scales = jnp.repeat(jnp.array([1.0, 4.0]), 50)  # eigenvalues 1 and 4, half each
    >>> loss_fn = lambda p: 0.5 * jnp.sum(scales * p ** 2)
    >>> sd = diagnostics.spectral_density(loss_fn, jnp.zeros(100), 0, lanczos_order=8)
    >>> print(f"{jnp.trapezoid(sd.density, sd.grid):.3f}")
    1.000
    >>> below = jnp.where(sd.grid < 2.5, sd.density, 0.0)
    >>> print(f"{jnp.trapezoid(below, sd.grid):.2f}")
    0.50

  References:
    Ubaru, Chen and Saad, `Fast estimation of tr(f(A)) via stochastic Lanczos quadrature
    <https://doi.org/10.1137/16M1104974>`_, SIAM J. Matrix Anal. Appl., 2017.

    Ghorbani, Krishnan and Xiao, `An investigation into neural net optimization via Hessian
    eigenvalue density <https://arxiv.org/abs/1901.10159>`_, ICML 2019.
  """
  check_callable("loss_fn", loss_fn)
  check_params(params)
  num_probes = check_count("num_probes", num_probes, minimum=1)
  lanczos_order = check_count("lanczos_order", lanczos_order, minimum=1)
  dtype = jnp.result_type(*jax.tree.leaves(params))
  if isinstance(grid, int | np.integer) and not isinstance(grid, bool):
    grid = check_count("grid", grid, minimum=2)
  else:
    grid_points = check_real_dtype("grid", grid)
    if grid_points.ndim != 1 or grid_points.size == 0:
      raise ValueError(
        "grid must be a non-empty one-dimensional array of points or a number of points (a "
        f"Python int >= 2, static under jax.jit); got an array of shape {grid_points.shape}."
      )
  if kernel_width is not None:
    kernel_width = check_positive_scalar("kernel_width", kernel_width, dtype)
  check_batches(batches)
  key = check_key(key)
  matvec, flat_params, _ = _flat_operator(loss_fn, params, batches)
  order = min(lanczos_order, flat_params.size)
  keys = jax.random.split(key, num_probes)

  def probe(probe_key: jax.Array) -> tuple[jax.Array, jax.Array]:
    sign_key, restart_key = jax.random.split(probe_key)
    v = jax.random.rademacher(sign_key, flat_params.shape, flat_params.dtype)
    tridiagonal = lanczos(matvec, v, order, restart_key)
    ritz_values, ritz_coordinates = jnp.linalg.eigh(tridiagonal.dense())
    return ritz_values, ritz_coordinates[0] ** 2

  nodes, weights = jax.lax.map(probe, keys)

  if kernel_width is None:
    spread = jnp.max(nodes) - jnp.min(nodes)
    scale = jnp.maximum(jnp.max(jnp.abs(nodes)), 1.0)
    sigma = _DEFAULT_RELATIVE_KERNEL_WIDTH * jnp.where(spread > 0, spread, scale)
  else:
    sigma = jnp.asarray(kernel_width, nodes.dtype)
    # Checked above when concrete; a traced width that is not positive and finite gives NaN.
    sigma = jnp.where((sigma > 0) & jnp.isfinite(sigma), sigma, jnp.nan)

  if isinstance(grid, int | np.integer):
    pad = _GRID_PADDING_IN_KERNEL_WIDTHS * sigma
    points = jnp.linspace(jnp.min(nodes) - pad, jnp.max(nodes) + pad, int(grid))
  else:
    points = jnp.asarray(grid, nodes.dtype)

  z = (points[:, None] - nodes.reshape(1, -1)) / sigma
  kernel = jnp.exp(-0.5 * z**2) / (sigma * jnp.sqrt(2 * jnp.pi))
  density = kernel @ weights.reshape(-1) / num_probes
  return SpectralDensity(
    grid=points, density=density, nodes=nodes, weights=weights, kernel_width=sigma
  )
