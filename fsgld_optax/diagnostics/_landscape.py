r"""Loss-landscape slices along filter-normalised random directions (Li et al., 2018).

A slice evaluates the loss on a line or a plane through the parameters,

.. math::

  f(\alpha) = L(\theta + \alpha\, d), \qquad
  f(\alpha, \beta) = L(\theta + \alpha\, d_1 + \beta\, d_2),

along random directions rescaled filter by filter to the parameters' own scale, so that slices
of networks with different weight scales (or of the same network before and after training)
are comparable. The loss is evaluated with :func:`jax.lax.map`, optionally vectorised in
groups with :func:`jax.vmap` (``map_batch_size``), and can be averaged over the chunks of a
dataset (``batches``, as in :func:`~fsgld_optax.diagnostics.hvp`).

Arguments are checked at the call and a bad one raises an error that names it: a direction
must have the tree structure and leaf shapes of the parameters (it is never broadcast),
``filter_axis`` must be a valid axis of every leaf with two or more dimensions, step sizes
must be one-dimensional real arrays.

Randomness contract: :func:`random_direction` draws one Gaussian per leaf with
``optax.tree.random_like(key, params)``; two independent directions for a 2-D slice come from
``jax.random.split(key)``.

References:
  Li, Xu, Taylor, Studer and Goldstein, `Visualizing the loss landscape of neural nets
  <https://arxiv.org/abs/1712.09913>`_, NeurIPS 2018.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from fsgld_optax.diagnostics._common import (
  KeyLike,
  LossFn,
  PyTree,
  check_batches,
  check_callable,
  check_key,
  check_like,
  check_optional_count,
  check_params,
  check_steps,
  mean_loss,
)

_NORM_EPSILON = 1e-10


def _check_filter_axis(params: PyTree, filter_axis: int) -> None:
  if isinstance(filter_axis, bool) or not isinstance(filter_axis, int | np.integer):
    raise ValueError(f"filter_axis must be an int, got {filter_axis!r}.")
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    ndim = jnp.ndim(leaf)
    if ndim >= 2 and not -ndim <= filter_axis < ndim:
      raise ValueError(
        f"filter_axis={filter_axis} is out of range for the {ndim}-dimensional leaf "
        f"params{jax.tree_util.keystr(path)} of shape {jnp.shape(leaf)}; it must lie in "
        f"[{-ndim}, {ndim})."
      )


def _filter_normalise(d: jax.Array, w: jax.Array, filter_axis: int) -> jax.Array:
  if d.ndim <= 1:
    return jnp.zeros_like(d)
  axis = filter_axis % d.ndim  # In range: checked by _check_filter_axis.
  others = tuple(i for i in range(d.ndim) if i != axis)
  d_norm = jnp.sqrt(jnp.sum(jnp.square(d), axis=others, keepdims=True))
  w_norm = jnp.sqrt(jnp.sum(jnp.square(w), axis=others, keepdims=True))
  return (d * (w_norm / (d_norm + _NORM_EPSILON))).astype(w.dtype)


def random_direction(key: KeyLike, params: PyTree, *, filter_axis: int = -1) -> PyTree:
  r"""Draws a filter-normalised Gaussian direction in parameter space.

  .. math::

    d_{\ell, j} \leftarrow \frac{d_{\ell, j}}{\|d_{\ell, j}\|} \|\theta_{\ell, j}\|,
    \qquad d_{\ell, j} \sim \mathcal{N}(0, I),

  for every filter :math:`j` of every leaf :math:`\ell` with two or more dimensions. A filter
  is one slice along ``filter_axis``: an output channel of a convolution kernel (Flax layout
  ``(height, width, in, out)``) or an output unit of a dense kernel (``(in, out)``); use
  ``filter_axis=0`` for ``(out, in, ...)`` layouts. Leaves with at most one dimension
  (biases, normalisation scales and offsets, scalars) get a zero direction, the option of Li
  et al. that keeps those parameters fixed along the slice.

  Args:
    key: PRNG key or int seed.
    params: parameters that set the per-filter scale.
    filter_axis: axis that indexes filters in every leaf with two or more dimensions; an
      int in ``[-ndim, ndim)`` for each such leaf (it is never wrapped around).

  Returns:
    A direction with the structure, shapes and dtypes of ``params``.

  Raises:
    ValueError: if ``filter_axis`` is not an int or out of range for a leaf, or ``params`` is
      not a pytree of real floating arrays.

  Examples:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from fsgld_optax import diagnostics
    >>> params = {"kernel": jnp.array([[3.0, 0.0], [4.0, 2.0]]), "bias": jnp.ones(2)}
    >>> d = diagnostics.random_direction(jax.random.key(0), params)
    >>> print(jnp.round(jnp.linalg.norm(d["kernel"], axis=0), 4), d["bias"])
    [5. 2.] [0. 0.]

  References:
    Li, Xu, Taylor, Studer and Goldstein, `Visualizing the loss landscape of neural nets
    <https://arxiv.org/abs/1712.09913>`_, NeurIPS 2018.
  """
  check_params(params)
  _check_filter_axis(params, filter_axis)
  noise = optax.tree.random_like(check_key(key), params)
  return jax.tree.map(lambda d, w: _filter_normalise(d, w, filter_axis), noise, params)


def _shift(params: PyTree, steps: tuple[jax.Array, ...], directions: tuple[PyTree, ...]) -> PyTree:
  def shift_leaf(w: jax.Array, *ds: jax.Array) -> jax.Array:
    offset = sum(step * d for step, d in zip(steps, ds, strict=True))
    return w + jnp.asarray(offset).astype(w.dtype)

  return jax.tree.map(shift_leaf, params, *directions)


def loss_slice_1d(
  loss_fn: LossFn,
  params: PyTree,
  direction: PyTree,
  alphas: ArrayLike,
  *,
  batches: PyTree | None = None,
  map_batch_size: int | None = None,
) -> jax.Array:
  r"""Evaluates the loss along a line through the parameters.

  .. math::

    f(\alpha_i) = L(\theta + \alpha_i\, d), \qquad i = 1, \dots, n.

  Args:
    loss_fn: ``loss_fn(params) -> scalar``, or ``loss_fn(params, batch)`` with ``batches``.
    params: the centre :math:`\theta` of the slice.
    direction: direction :math:`d`, e.g. from :func:`random_direction`.
    alphas: step sizes, shape ``(n,)``.
    batches: optional data chunks over which the loss is averaged, as in
      :func:`~fsgld_optax.diagnostics.hvp`.
    map_batch_size: step sizes evaluated together with :func:`jax.vmap` (passed to
      :func:`jax.lax.map` as ``batch_size``), an int >= 1; ``None`` evaluates them one at a
      time.

  Returns:
    Losses of shape ``(n,)``.

  Raises:
    ValueError: if ``direction`` differs from ``params`` in tree structure or in the shape
      of a leaf, ``alphas`` is not a one-dimensional real array, ``map_batch_size`` is not
      ``None`` or an int >= 1, or ``params`` or ``batches`` is invalid.

  Examples:
    >>> import jax.numpy as jnp
    >>> from fsgld_optax import diagnostics
    >>> loss_fn = lambda p: jnp.sum(p ** 2)
    >>> alphas = jnp.linspace(-1.0, 1.0, 5)
    >>> diagnostics.loss_slice_1d(loss_fn, jnp.array([1.0, 0.0]), jnp.array([1.0, 1.0]), alphas)
    Array([1. , 0.5, 1. , 2.5, 5. ], dtype=float32)

  References:
    Li, Xu, Taylor, Studer and Goldstein, `Visualizing the loss landscape of neural nets
    <https://arxiv.org/abs/1712.09913>`_, NeurIPS 2018.
  """
  check_callable("loss_fn", loss_fn)
  check_params(params)
  direction = check_like("direction", direction, params)
  alphas = check_steps("alphas", alphas)
  map_batch_size = check_optional_count("map_batch_size", map_batch_size)
  check_batches(batches)

  def at(alpha: jax.Array) -> jax.Array:
    return mean_loss(loss_fn, _shift(params, (alpha,), (direction,)), batches)

  return jax.lax.map(at, alphas, batch_size=map_batch_size)


def loss_slice_2d(
  loss_fn: LossFn,
  params: PyTree,
  direction_x: PyTree,
  direction_y: PyTree,
  alphas: ArrayLike,
  betas: ArrayLike,
  *,
  batches: PyTree | None = None,
  map_batch_size: int | None = None,
) -> jax.Array:
  r"""Evaluates the loss on a plane through the parameters.

  .. math::

    f(\alpha_i, \beta_j) = L(\theta + \alpha_i\, d_x + \beta_j\, d_y).

  Args:
    loss_fn: ``loss_fn(params) -> scalar``, or ``loss_fn(params, batch)`` with ``batches``.
    params: the centre :math:`\theta` of the slice.
    direction_x: first direction :math:`d_x`, e.g. from :func:`random_direction`.
    direction_y: second direction :math:`d_y`, drawn with an independent key.
    alphas: step sizes along ``direction_x``, shape ``(n,)``.
    betas: step sizes along ``direction_y``, shape ``(m,)``.
    batches: optional data chunks over which the loss is averaged, as in
      :func:`~fsgld_optax.diagnostics.hvp`.
    map_batch_size: grid points evaluated together with :func:`jax.vmap` (passed to
      :func:`jax.lax.map` as ``batch_size``), an int >= 1; ``None`` evaluates them one at a
      time.

  Returns:
    Losses of shape ``(n, m)``; entry ``[i, j]`` belongs to ``(alphas[i], betas[j])``.

  Raises:
    ValueError: as :func:`loss_slice_1d`, for either direction and either set of steps.

  Examples:
    >>> import jax.numpy as jnp
    >>> from fsgld_optax import diagnostics
    >>> loss_fn = lambda p: p[0] ** 2 + 2.0 * p[1] ** 2
    >>> ex, ey = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
    >>> steps = jnp.array([-1.0, 0.0, 1.0])
    >>> diagnostics.loss_slice_2d(loss_fn, jnp.zeros(2), ex, ey, steps, steps)
    Array([[3., 1., 3.],
           [2., 0., 2.],
           [3., 1., 3.]], dtype=float32)

  References:
    Li, Xu, Taylor, Studer and Goldstein, `Visualizing the loss landscape of neural nets
    <https://arxiv.org/abs/1712.09913>`_, NeurIPS 2018.
  """
  check_callable("loss_fn", loss_fn)
  check_params(params)
  direction_x = check_like("direction_x", direction_x, params)
  direction_y = check_like("direction_y", direction_y, params)
  alphas = check_steps("alphas", alphas)
  betas = check_steps("betas", betas)
  map_batch_size = check_optional_count("map_batch_size", map_batch_size)
  check_batches(batches)
  grid_alpha, grid_beta = jnp.meshgrid(alphas, betas, indexing="ij")

  def at(steps: tuple[jax.Array, jax.Array]) -> jax.Array:
    shifted = _shift(params, steps, (direction_x, direction_y))
    return mean_loss(loss_fn, shifted, batches)

  losses = jax.lax.map(
    at, (grid_alpha.reshape(-1), grid_beta.reshape(-1)), batch_size=map_batch_size
  )
  return losses.reshape(grid_alpha.shape)
