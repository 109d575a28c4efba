r"""Low-precision parameters: how much of an update survives rounding, and the remedy.

A Langevin step adds noise of size :math:`\sqrt{2\lambda/\beta}` to every weight; with
the paper's values (λ = 0.1, β = 1e8 … 1e9) that is about 1e-5 … 5e-5. A ``bfloat16``
weight of size ~1 has a spacing of 2⁻⁷ ≈ 7.8e-3 between neighbouring values (``float16``:
2⁻¹⁰ ≈ 9.8e-4), so ``optax.apply_updates`` rounds such a step away entirely and the chain
silently turns into plain (perturbed) gradient descent. fSGLD keeps every parameter's dtype,
so this happens whenever the parameters themselves are low precision.

- :func:`lost_update_fraction` measures it: the relative size of the part of an update that
  ``optax.apply_updates`` rounds away.
- The remedy is float32 master weights: keep the parameters (and so the optimizer's
  arithmetic and the Langevin noise) in float32 and cast them to the compute dtype inside
  the loss, with :func:`with_compute_dtype`. The gradient then comes back in float32, the
  update is applied in float32, and the noise survives.

The weight perturbations ε of :func:`~fsgld_optax.perturbed_value_and_grad` are added in the
parameters' dtype too; with master weights they are added in float32 and then rounded with
the weights to the compute dtype in the forward pass, so a σ close to the compute dtype's
spacing (σ ≈ 3e-3 … 1e-2 against 7.8e-3 for ``bfloat16`` weights near 1) is quantised
there. That is a property of computing in ``bfloat16``, not of the optimizer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from fsgld_optax import _randomness


def lost_update_fraction(params: optax.Params, updates: optax.Updates) -> jax.Array:
  r"""The fraction of an update that rounding to the parameters' dtype throws away.

  .. math::

    \rho = \frac{\lVert (\theta \oplus u) - \theta - u \rVert_2}{\lVert u \rVert_2},

  where :math:`\theta \oplus u` is ``optax.apply_updates(params, updates)`` (the sum
  rounded to each parameter's dtype) and the differences and norms are taken in float32
  (float64 under ``jax_enable_x64``) over all floating leaves. With round-to-nearest,
  :math:`0 \le \rho \le 1`: ``0`` means the whole update is applied, ``1`` that the
  parameters did not move at all. Call it on the update of a noise-dominated step (or on
  the Langevin part alone) to see whether low-precision parameters keep the noise.

  Args:
    params: the parameters the update is applied to.
    updates: an update with the same tree structure and leaf shapes, e.g. from ``tx.update``.

  Returns:
    ρ as a scalar array; ``0`` for an all-zero update, and NaN when the update (or a
    parameter) is not finite: a NaN or infinite update is not "applied" in any sense, and
    reporting 0 would read as "nothing lost". NaN is returned rather than raised so that the
    function behaves the same under :func:`jax.jit`; test it with ``jnp.isnan``.

  Raises:
    ValueError: if ``updates`` differs from ``params`` in tree structure or in the shape of
      a leaf (``optax.apply_updates`` would broadcast it).

  Examples:
    >>> import jax.numpy as jnp
    >>> import fsgld_optax
    >>> params = jnp.ones(4, jnp.bfloat16)
    >>> print(fsgld_optax.lost_update_fraction(params, jnp.full(4, 1e-5, jnp.bfloat16)))
    1.0
    >>> print(fsgld_optax.lost_update_fraction(params.astype(jnp.float32), jnp.full(4, 1e-5)))
    0.0...
    >>> print(fsgld_optax.lost_update_fraction(params, jnp.full(4, jnp.nan, jnp.bfloat16)))
    nan
  """
  params_def, updates_def = jax.tree.structure(params), jax.tree.structure(updates)
  if params_def != updates_def:
    raise ValueError(
      f"updates must have the tree structure of params; got {updates_def}, expected {params_def}."
    )
  for path, p, u in zip(
    [path for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]],
    jax.tree.leaves(params),
    jax.tree.leaves(updates),
    strict=True,
  ):
    if jnp.shape(p) != jnp.shape(u):
      raise ValueError(
        f"updates{jax.tree_util.keystr(path)} has shape {jnp.shape(u)}, but the parameter has "
        f"shape {jnp.shape(p)}."
      )
  dtype = jnp.result_type(float)
  applied = optax.apply_updates(params, updates)
  triples = [
    (jnp.asarray(p, dtype), jnp.asarray(u, dtype), jnp.asarray(q, dtype))
    for p, u, q in zip(
      jax.tree.leaves(params), jax.tree.leaves(updates), jax.tree.leaves(applied), strict=True
    )
    if _randomness.is_inexact(p) and _randomness.is_inexact(u)
  ]
  if not triples:
    return jnp.zeros([], dtype)
  # Norms of u / max|u| and err / max|u|: no overflow of the squares for large finite updates.
  finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p) & jnp.isfinite(u)) for p, u, _ in triples]))
  largest = jnp.max(jnp.stack([jnp.max(jnp.abs(u), initial=0.0) for _, u, _ in triples]))
  scale = jnp.where(finite & (largest > 0), largest, 1.0)
  sq_err = sum(jnp.sum(jnp.abs((q - p - u) / scale) ** 2) for p, u, q in triples)
  sq_norm = sum(jnp.sum(jnp.abs(u / scale) ** 2) for _, u, _ in triples)
  rho = jnp.sqrt(sq_err / jnp.where(sq_norm > 0, sq_norm, 1))
  return jnp.where(finite, jnp.where(largest > 0, rho, 0.0), jnp.nan).astype(dtype)


def with_compute_dtype(fun: Callable[..., Any], dtype: Any = jnp.bfloat16) -> Callable[..., Any]:
  """Wraps a loss so that it runs in ``dtype`` on parameters kept in higher precision.

  ``with_compute_dtype(fun, jnp.bfloat16)(params, *args, **kwargs)`` calls ``fun`` with the
  floating leaves of ``params`` cast to ``dtype`` (other leaves and the other arguments
  unchanged). Differentiating it gives gradients in the parameters' own dtype, so with
  float32 ("master") parameters fSGLD's update, its Langevin noise and
  ``optax.apply_updates`` all run in float32, while the forward and backward passes run in
  ``dtype``. Use it with :func:`~fsgld_optax.perturbed_value_and_grad` like any loss.

  Args:
    fun: the loss, ``fun(params, *args, **kwargs)``.
    dtype: the compute dtype of the floating parameters, ``bfloat16`` by default.

  Returns:
    The wrapped loss, with the same signature as ``fun``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> import fsgld_optax
    >>> loss_fn = lambda p, x: jnp.sum(p["w"] * x).astype(jnp.float32)
    >>> params = {"w": jnp.ones(3, jnp.float32)}
    >>> grads = jax.grad(fsgld_optax.with_compute_dtype(loss_fn))(params, jnp.ones(3, jnp.bfloat16))
    >>> print(grads["w"].dtype)
    float32
  """

  def cast(leaf: Any) -> Any:
    is_float = _randomness.is_inexact(leaf) and jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
    return jnp.asarray(leaf).astype(dtype) if is_float else leaf

  def wrapped(params: Any, *args: Any, **kwargs: Any) -> Any:
    return fun(jax.tree.map(cast, params), *args, **kwargs)

  return wrapped
