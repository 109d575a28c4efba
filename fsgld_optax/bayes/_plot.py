"""The reliability diagram (matplotlib is imported only when it is drawn)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from fsgld_optax.bayes._metrics import calibration_bins, ece


def plot_reliability_diagram(
  probs: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  num_bins: int = 15,
  ax: Any = None,
  title: str | None = None,
) -> Any:
  """Draws a reliability diagram: accuracy against confidence per bin, with the ECE.

  Bars show the accuracy of each bin of :func:`calibration_bins`, the shaded part the gap
  to the bin's mean confidence; the dashed diagonal is perfect calibration, so bars below
  it mean over-confidence.

  Args:
    probs: predicted probabilities, shape ``(N, K)``.
    labels: true classes, shape ``(N,)``.
    num_bins: the number of equal-width bins (as in :func:`ece`).
    ax: a matplotlib ``Axes`` to draw on; a new figure if ``None``.
    title: the title; the ECE is appended.

  Returns:
    The matplotlib ``Axes``.

  Examples:
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import jax.numpy as jnp
    >>> from fsgld_optax import bayes
    >>> probs = jnp.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    >>> ax = bayes.plot_reliability_diagram(probs, jnp.array([0, 1, 1]), num_bins=5)
    >>> print(ax.get_xlabel())
    confidence
  """
  import matplotlib.pyplot as plt

  bins = calibration_bins(probs, labels, num_bins=num_bins)
  error = float(ece(probs, labels, num_bins=num_bins))
  if ax is None:
    _, ax = plt.subplots(figsize=(4, 4))
  edges = np.asarray(bins.edges, np.float64)
  count = np.asarray(bins.count)
  full = count > 0
  width = np.diff(edges)
  accuracy = np.where(full, np.asarray(bins.accuracy, np.float64), 0.0)
  confidence = np.asarray(bins.confidence, np.float64)
  ax.bar(
    edges[:-1], accuracy, width=width, align="edge", color="C0", edgecolor="white", label="accuracy"
  )
  gap_bottom = np.where(full, np.minimum(accuracy, confidence), 0.0)
  gap = np.where(full, np.abs(confidence - accuracy), 0.0)
  ax.bar(
    edges[:-1],
    gap,
    bottom=gap_bottom,
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
