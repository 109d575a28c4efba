"""Flatness diagnostics: Hessian trace, top eigenvalues, spectral density, loss landscapes.

Flat minima are what flatness-aware SGLD seeks; this subpackage measures flatness of any
parameter pytree under a loss closure, without forming the Hessian:

* :func:`hvp` — Hessian-vector products on pytrees (forward-over-reverse), optionally averaged
  over the chunks of a dataset larger than one batch;
* :func:`hutchinson_trace` — trace estimate with Rademacher probes and its standard error;
* :func:`top_eigenvalues` — leading eigenpairs by Lanczos with full reorthogonalisation;
* :func:`spectral_density` — eigenvalue density by stochastic Lanczos quadrature;
* :func:`random_direction`, :func:`loss_slice_1d`, :func:`loss_slice_2d` — loss-landscape
  slices along filter-normalised random directions;
* :func:`plot_spectrum`, :func:`plot_slice_1d`, :func:`plot_slice_2d` — matplotlib figures
  (matplotlib is imported only when a plotting function is called).

Every function checks its arguments when called, before any tracing, and raises an error that
names a bad one: counts must be ints in range (not booleans or floats), widths positive and
finite in the parameters' dtype, parameters real floating arrays, tangents and directions the
shape of the parameters (never broadcast), ``filter_axis`` a valid axis, and ``batches`` hold
at least one example in every chunk.

Examples:
  >>> import jax
  >>> import jax.numpy as jnp
  >>> from fsgld_optax import diagnostics
  >>> loss_fn = lambda p: 0.5 * jnp.sum(jnp.arange(1.0, 5.0) * p ** 2)
  >>> params = jnp.ones(4)
  >>> print(f"{diagnostics.hutchinson_trace(loss_fn, params, 0).trace:.2f}")
  10.00
  >>> lam = diagnostics.top_eigenvalues(loss_fn, params, 0, k=1, num_iterations=4)
  >>> print(f"{lam.eigenvalues[0]:.2f}")
  4.00

References:
  Flatness-aware stochastic gradient Langevin dynamics, `arXiv:2510.02174
  <https://arxiv.org/abs/2510.02174>`_.
"""

from fsgld_optax.diagnostics._hessian import EigenEstimate as EigenEstimate
from fsgld_optax.diagnostics._hessian import SpectralDensity as SpectralDensity
from fsgld_optax.diagnostics._hessian import TraceEstimate as TraceEstimate
from fsgld_optax.diagnostics._hessian import hutchinson_trace as hutchinson_trace
from fsgld_optax.diagnostics._hessian import hvp as hvp
from fsgld_optax.diagnostics._hessian import spectral_density as spectral_density
from fsgld_optax.diagnostics._hessian import top_eigenvalues as top_eigenvalues
from fsgld_optax.diagnostics._landscape import loss_slice_1d as loss_slice_1d
from fsgld_optax.diagnostics._landscape import loss_slice_2d as loss_slice_2d
from fsgld_optax.diagnostics._landscape import random_direction as random_direction
from fsgld_optax.diagnostics._plot import plot_slice_1d as plot_slice_1d
from fsgld_optax.diagnostics._plot import plot_slice_2d as plot_slice_2d
from fsgld_optax.diagnostics._plot import plot_spectrum as plot_spectrum

__all__ = [
  "EigenEstimate",
  "SpectralDensity",
  "TraceEstimate",
  "hutchinson_trace",
  "hvp",
  "loss_slice_1d",
  "loss_slice_2d",
  "plot_slice_1d",
  "plot_slice_2d",
  "plot_spectrum",
  "random_direction",
  "spectral_density",
  "top_eigenvalues",
]
