"""The reliability diagram (matplotlib is imported only when it is drawn)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from fsgld_optax.bayes._metrics import CalibrationBins, calibration_bins


def plot_reliability_diagram(
  probs: jax.typing.ArrayLike | None = None,
  labels: jax.typing.ArrayLike | None = None,
  *,
  bins: CalibrationBins | None = None,
  num_bins: int = 15,
  ax: Any = None,
  title: str | None = None,
) -> Any:
  r"""Draws a reliability diagram: accuracy against confidence per bin, with the ECE.

  Bars show the accuracy of each bin of :func:`calibration_bins`, the shaded part the gap
  to the bin's mean confidence; the dashed diagonal is perfect calibration, so bars below
  it mean over-confidence. The title gives the ECE,
  :math:`\sum_b \frac{n_b}{N}|\mathrm{acc}_b - \mathrm{conf}_b|` (:func:`ece`).

  Args:
    probs: predicted probabilities, shape ``(N, K)`` (or pass ``bins``).
    labels: true classes, shape ``(N,)``.
    bins: precomputed :class:`CalibrationBins` (e.g. pooled over runs), instead of
      ``probs`` and ``labels``.
    num_bins: the number of equal-width bins (as in :func:`ece`), with ``probs``.
    ax: a matplotlib ``Axes`` to draw on; a new figure if ``None``.
    title: the title; the ECE is appended.

  Returns:
    The matplotlib ``Axes``.

  Raises:
    ValueError: unless exactly one of ``probs`` (with ``labels``) and ``bins`` is given.

  Examples:
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import jax.numpy as jnp
    >>> from fsgld_optax import bayes
    >>> probs = jnp.array([[0.9, 0.1], [0.55, 0.45], [0.3, 0.7]])
    >>> ax = bayes.plot_reliability_diagram(probs, jnp.array([0, 1, 1]), num_bins=5)
    >>> print(ax.get_title())
    ECE 0.317
  """
  import matplotlib.pyplot as plt

  if bins is None:
    if probs is None or labels is None:
      raise ValueError("plot_reliability_diagram needs probs and labels, or bins.")
    bins = calibration_bins(probs, labels, num_bins=num_bins)
  elif probs is not None or labels is not None:
    raise ValueError("plot_reliability_diagram takes probs and labels, or bins, not both.")
  if ax is None:
    _, ax = plt.subplots(figsize=(4, 4))
  edges = np.asarray(bins.edges, np.float64)
  count = np.asarray(bins.count)
  full = count > 0
  width = np.diff(edges)
  accuracy = np.where(full, np.asarray(bins.accuracy, np.float64), 0.0)
  confidence = np.where(full, np.asarray(bins.confidence, np.float64), 0.0)
  error = float(np.sum(count[full] * np.abs(accuracy - confidence)[full]) / max(count.sum(), 1))
  ax.bar(
    edges[:-1],
    accuracy,
    width=width,
    align="edge",
    color="C0",
    edgecolor="white",
    label="accuracy",
  )
  ax.bar(
    edges[:-1],
    np.abs(confidence - accuracy),
    bottom=np.minimum(accuracy, confidence),
    width=width,
    align="edge",
    color="C3",
    alpha=0.3,
    edgecolor="C3",
    label="gap to confidence",
  )
  ax.plot([0, 1], [0, 1], "k--", lw=1)
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1)
  ax.set_xlabel("confidence")
  ax.set_ylabel("accuracy")
  ax.legend(loc="upper left", fontsize="small")
  ax.set_title(f"{title + ', ' if title else ''}ECE {error:.3f}")
  return ax
