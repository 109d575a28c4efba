"""Matplotlib figures for curvature spectra and loss-landscape slices.

matplotlib is an optional dependency (the ``diagnostics`` extra): it is imported inside each
function, so importing :mod:`fsgld_optax` never requires it. Every function draws on the
given ``ax`` or, when ``ax`` is ``None``, on a new :mod:`matplotlib.pyplot` figure, and returns
the Axes (its Figure is ``ax.figure``). Close pyplot figures with ``plt.close(ax.figure)`` when
producing many of them. Arguments are checked before anything is drawn, with errors that name
them (shapes of the data, boolean flags, labels, contour levels).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from jax.typing import ArrayLike

from fsgld_optax.diagnostics._common import check_bool, check_count, check_steps
from fsgld_optax.diagnostics._hessian import SpectralDensity

if TYPE_CHECKING:
  from matplotlib.axes import Axes

_CENTRE_GID = "fsgld_optax.diagnostics.slice_centre"


def _check_label(label: str | None) -> None:
  if label is not None and not isinstance(label, str):
    raise TypeError(f"label must be a str or None, got {label!r}.")


def _check_curve(x_name: str, x: ArrayLike, y_name: str, y: ArrayLike) -> None:
  xs = check_steps(x_name, x)
  ys = check_steps(y_name, y)
  if xs.shape != ys.shape:
    raise ValueError(
      f"{x_name} and {y_name} must have the same length, got shapes {xs.shape} and {ys.shape}."
    )


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
  if ax is not None:
    return ax
  import matplotlib.pyplot as plt

  _, new_ax = plt.subplots(figsize=figsize, layout="constrained")
  return new_ax


def plot_spectrum(
  spectrum: SpectralDensity | None = None,
  *,
  eigenvalues: ArrayLike | None = None,
  ax: Axes | None = None,
  log_scale: bool = True,
  label: str | None = None,
) -> Axes:
  """Plots a Hessian eigenvalue density and/or individual eigenvalues.

  The density from :func:`~fsgld_optax.diagnostics.spectral_density` is drawn as a line; the
  eigenvalues (e.g. from :func:`~fsgld_optax.diagnostics.top_eigenvalues`) as dashed vertical
  lines. Hessian densities span many orders of magnitude (a bulk near zero and a few
  outliers), hence the logarithmic density axis by default; values below ``1e-8`` of the peak
  are clipped to that floor.

  Args:
    spectrum: a :class:`~fsgld_optax.diagnostics.SpectralDensity`.
    eigenvalues: eigenvalues to mark, shape ``(k,)``.
    ax: Axes to draw on; a new pyplot figure when ``None``.
    log_scale: whether the density axis is logarithmic.
    label: legend label of the density curve.

  Returns:
    The Axes.

  Examples:
    >>> import jax.numpy as jnp
    >>> from matplotlib.figure import Figure
    >>> from fsgld_optax import diagnostics
    >>> loss_fn = lambda p: 0.5 * jnp.sum(jnp.arange(1.0, 21.0) * p**2)
    >>> spectrum = diagnostics.spectral_density(loss_fn, jnp.zeros(20), 0, lanczos_order=8)
    >>> ax = Figure().add_subplot()
    >>> ax = diagnostics.plot_spectrum(spectrum, eigenvalues=[20.0, 19.0, 18.0], ax=ax)
    >>> ax.get_xlabel(), len(ax.lines)
    ('eigenvalue', 4)
  """
  if spectrum is None and eigenvalues is None:
    raise ValueError("Pass a `spectrum` (SpectralDensity), `eigenvalues`, or both.")
  if spectrum is not None:
    if not isinstance(spectrum, SpectralDensity):
      raise TypeError(
        f"spectrum must be a SpectralDensity (from spectral_density), got {type(spectrum)}."
      )
    _check_curve("spectrum.grid", spectrum.grid, "spectrum.density", spectrum.density)
  if eigenvalues is not None:
    check_steps("eigenvalues", np.atleast_1d(np.asarray(eigenvalues)))
  check_bool("log_scale", log_scale)
  _check_label(label)
  ax = _axes(ax, (6.0, 4.0))
  if spectrum is not None:
    grid = np.asarray(spectrum.grid)
    density = np.asarray(spectrum.density)
    if log_scale:
      density = np.maximum(density, 1e-8 * max(float(density.max()), 1e-300))
      ax.set_yscale("log")
    ax.plot(grid, density, label=label or "spectral density")
    ax.set_ylabel("density")
  if eigenvalues is not None:
    for i, value in enumerate(np.atleast_1d(np.asarray(eigenvalues))):
      ax.axvline(
        float(value),
        color="tab:red",
        linestyle="--",
        linewidth=1.0,
        label="top eigenvalues" if i == 0 else None,
      )
  ax.set_xlabel("eigenvalue")
  ax.legend()
  return ax


def plot_slice_1d(
  alphas: ArrayLike,
  losses: ArrayLike,
  *,
  ax: Axes | None = None,
  label: str | None = None,
  log_scale: bool = False,
) -> Axes:
  """Plots a 1-D loss slice from :func:`~fsgld_optax.diagnostics.loss_slice_1d`.

  Args:
    alphas: step sizes, shape ``(n,)``.
    losses: losses at those step sizes, shape ``(n,)``.
    ax: Axes to draw on (call repeatedly to overlay slices); a new figure when ``None``.
    label: legend label of the curve.
    log_scale: whether the loss axis is logarithmic.

  Returns:
    The Axes.

  Examples:
    >>> import jax.numpy as jnp
    >>> from matplotlib.figure import Figure
    >>> from fsgld_optax import diagnostics
    >>> alphas = jnp.linspace(-1.0, 1.0, 11)
    >>> ax = diagnostics.plot_slice_1d(alphas, alphas**2, ax=Figure().add_subplot())
    >>> ax.get_xlabel(), ax.get_ylabel()
    ('α', 'loss')
  """
  _check_curve("alphas", alphas, "losses", losses)
  check_bool("log_scale", log_scale)
  _check_label(label)
  ax = _axes(ax, (5.0, 4.0))
  ax.plot(np.asarray(alphas), np.asarray(losses), label=label)
  if log_scale:
    ax.set_yscale("log")
  if not any(line.get_gid() == _CENTRE_GID for line in ax.lines):  # once per Axes
    ax.axvline(0.0, color="0.7", linewidth=0.8, zorder=0, gid=_CENTRE_GID)
  ax.set_xlabel("α")
  ax.set_ylabel("loss")
  if label is not None:
    ax.legend()
  return ax


def plot_slice_2d(
  alphas: ArrayLike,
  betas: ArrayLike,
  losses: ArrayLike,
  *,
  ax: Axes | None = None,
  levels: int | ArrayLike = 20,
  filled: bool = False,
) -> Axes:
  """Plots a 2-D loss slice from :func:`~fsgld_optax.diagnostics.loss_slice_2d` as contours.

  Args:
    alphas: step sizes along the first direction, shape ``(n,)`` (horizontal axis).
    betas: step sizes along the second direction, shape ``(m,)`` (vertical axis).
    losses: losses of shape ``(n, m)``, entry ``[i, j]`` at ``(alphas[i], betas[j])``.
    ax: Axes to draw on; a new figure when ``None``.
    levels: number of contour levels (an int >= 1) or their values (increasing).
    filled: filled contours with a colour bar instead of labelled contour lines.

  Returns:
    The Axes; the centre of the slice is marked with a cross.

  Examples:
    >>> import jax.numpy as jnp
    >>> from matplotlib.figure import Figure
    >>> from fsgld_optax import diagnostics
    >>> steps = jnp.linspace(-1.0, 1.0, 9)
    >>> losses = steps[:, None] ** 2 + 2.0 * steps[None, :] ** 2
    >>> ax = diagnostics.plot_slice_2d(steps, steps, losses, ax=Figure().add_subplot())
    >>> ax.get_xlabel(), ax.get_ylabel()
    ('α', 'β')
  """
  alphas_np = np.asarray(check_steps("alphas", alphas))
  betas_np = np.asarray(check_steps("betas", betas))
  losses_np = np.asarray(losses)
  check_bool("filled", filled)
  if isinstance(levels, int | np.integer | np.bool_):
    levels = check_count("levels", levels, minimum=1)
  else:
    level_values = np.asarray(check_steps("levels", levels))
    if level_values.size == 0 or np.any(np.diff(level_values) <= 0):
      raise ValueError(f"levels must be an int >= 1 or increasing values, got {levels!r}.")
  if losses_np.shape != (alphas_np.size, betas_np.size):
    raise ValueError(
      f"losses must have shape (len(alphas), len(betas)) = "
      f"{(alphas_np.size, betas_np.size)}, got {losses_np.shape}."
    )
  ax = _axes(ax, (5.0, 4.5))
  levels_arg = levels if isinstance(levels, int) else np.asarray(levels)
  if filled:
    contours = ax.contourf(alphas_np, betas_np, losses_np.T, levels=levels_arg)
    ax.figure.colorbar(contours, ax=ax, label="loss")
  else:
    contours = ax.contour(alphas_np, betas_np, losses_np.T, levels=levels_arg)
    ax.clabel(contours, inline=True, fontsize=7)
  ax.plot([0.0], [0.0], marker="x", color="black")
  ax.set_xlabel("α")
  ax.set_ylabel("β")
  return ax
