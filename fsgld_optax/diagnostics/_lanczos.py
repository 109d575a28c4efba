"""Lanczos tridiagonalisation with full reorthogonalisation, for symmetric matrix-free operators.

This is the Krylov engine behind :func:`~fsgld_optax.diagnostics.top_eigenvalues` and
:func:`~fsgld_optax.diagnostics.spectral_density`. It works on flat vectors; the Hessian
operators ravel and unravel parameter pytrees around it.

The recurrence is written out here rather than taken from ``matfree.decomp.tridiag_sym``
because of how Hessians of neural networks behave:

* **Breakdown.** Network Hessians have large null spaces and clusters of repeated eigenvalues,
  so the Krylov space can become invariant before ``num_iterations`` steps (the next residual
  vanishes). ``matfree`` 0.6.3 divides by the vanishing residual and returns spurious Ritz
  values (for ``diag(1, 2, 3)`` repeated over 50 coordinates and 10 steps it reports
  eigenvalues near ``-44`` and ``50``). Here a vanishing residual (norm at most
  ``8 * eps * ||A q||``) ends the current Krylov block: the coupling is set to exactly zero and
  the iteration restarts from a fresh random vector orthogonal to all previous ones. The
  tridiagonal matrix becomes block diagonal: Ritz pairs of a finished block are exact
  (zero residual), repeated eigenvalues are found with their multiplicity, and the first block
  alone carries the quadrature weights of the starting vector.
* **Tridiagonal entries.** The diagonal is the Rayleigh quotient ``q_j^T A q_j`` and the
  off-diagonal is the norm of the residual *after* full reorthogonalisation (classical
  Gram-Schmidt applied twice), which keeps the computed matrix symmetric and consistent with
  the stored basis.

Randomness contract: the restart vector for step ``j`` is drawn from
``jax.random.fold_in(key, j)``; it is only drawn when a breakdown occurs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Tridiagonal(NamedTuple):
  """A Lanczos factorisation ``A Q^T ≈ Q^T T`` with orthonormal rows in ``basis``."""

  basis: jax.Array  # (m, n): orthonormal Lanczos vectors as rows.
  diagonal: jax.Array  # (m,): diagonal of T.
  off_diagonal: jax.Array  # (m - 1,): off-diagonal of T; zero where a breakdown restarted.
  residual_norm: jax.Array  # (): norm of the residual after the last step.

  def dense(self) -> jax.Array:
    """Returns the tridiagonal matrix ``T`` as a dense ``(m, m)`` array."""
    return (
      jnp.diag(self.diagonal) + jnp.diag(self.off_diagonal, 1) + jnp.diag(self.off_diagonal, -1)
    )


def _project_out(basis: jax.Array, w: jax.Array) -> jax.Array:
  """Removes the components of ``w`` along the rows of ``basis`` (Gram-Schmidt, twice)."""
  w = w - basis.T @ (basis @ w)
  return w - basis.T @ (basis @ w)


def lanczos(
  matvec: Callable[[jax.Array], jax.Array],
  v0: jax.Array,
  num_iterations: int,
  key: jax.Array,
) -> Tridiagonal:
  """Runs ``num_iterations`` Lanczos steps on a symmetric operator from ``v0``.

  Args:
    matvec: the symmetric linear operator ``x -> A x`` on flat vectors of shape ``(n,)``.
    v0: non-zero starting vector of shape ``(n,)``; it is normalised internally.
    num_iterations: number of matrix-vector products ``m``, with ``1 <= m <= n``.
    key: typed PRNG key for restart vectors after a breakdown.

  Returns:
    A :class:`Tridiagonal` factorisation.
  """
  (n,) = v0.shape
  if not 1 <= num_iterations <= n:
    raise ValueError(f"num_iterations must lie in [1, {n}] (the dimension), got {num_iterations}")
  dtype = v0.dtype
  eps = jnp.finfo(dtype).eps
  tiny = jnp.finfo(dtype).tiny

  def restart(j: jax.Array, basis: jax.Array) -> jax.Array:
    r = jax.random.normal(jax.random.fold_in(key, j), (n,), dtype)
    r = _project_out(basis, r)
    return r / jnp.maximum(jnp.linalg.norm(r), tiny)

  def step(
    j: jax.Array, state: tuple[jax.Array, jax.Array, jax.Array, jax.Array]
  ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    basis, alphas, betas, q = state
    basis = basis.at[j].set(q)
    aq = matvec(q)
    alpha = jnp.vdot(q, aq)
    w = _project_out(basis, aq)
    beta = jnp.linalg.norm(w)
    breakdown = beta <= 8 * eps * jnp.linalg.norm(aq)
    q_next = jax.lax.cond(
      breakdown,
      lambda: restart(j, basis),
      lambda: w / jnp.maximum(beta, tiny),
    )
    alphas = alphas.at[j].set(alpha)
    betas = betas.at[j].set(jnp.where(breakdown, jnp.zeros_like(beta), beta))
    return basis, alphas, betas, q_next

  q0 = v0 / jnp.linalg.norm(v0)
  init = (
    jnp.zeros((num_iterations, n), dtype),
    jnp.zeros((num_iterations,), dtype),
    jnp.zeros((num_iterations,), dtype),
    q0,
  )
  basis, alphas, betas, _ = jax.lax.fori_loop(0, num_iterations, step, init)
  return Tridiagonal(
    basis=basis,
    diagonal=alphas,
    off_diagonal=betas[:-1],
    residual_norm=betas[-1],
  )
