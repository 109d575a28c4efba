"""Bayesian model averaging: the mean predictive distribution over collected samples."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from fsgld_optax.bayes._collect import SampleBuffer
from fsgld_optax.bayes._metrics import _check_probs


def _iterate(samples: Any, stacked: bool) -> Iterator[Any]:
  if isinstance(samples, SampleBuffer):
    leaves = jax.tree.leaves(samples.samples)
    capacity = leaves[0].shape[0] if leaves else 0
    count = int(samples.count)
    start = count % capacity if count > capacity else 0
    for i in range(min(count, capacity)):
      index = (start + i) % capacity
      yield jax.tree.map(lambda x, index=index: x[index], samples.samples)
    return
  if stacked:
    leaves = jax.tree.leaves(samples)
    for i in range(leaves[0].shape[0] if leaves else 0):
      yield jax.tree.map(lambda x, i=i: x[i], samples)
    return
  if isinstance(samples, Mapping) or not isinstance(samples, Iterable):
    raise ValueError(
      "samples must be a SampleBuffer, a SampleCollector or an iterable of samples; for one "
      "pytree of samples stacked on a leading axis pass stacked=True."
    )
  yield from samples


def average_predictions(
  predict: Callable[..., Any],
  samples: Any,
  *args: Any,
  stacked: bool = False,
  **kwargs: Any,
) -> jax.Array:
  r"""The Bayesian model average: the mean over samples of the predicted probabilities.

  .. math::

    p(y \mid x, D) \approx \frac{1}{S} \sum_{s=1}^{S} p(y \mid x, \theta_s),

  averaging probabilities, never logits (the mean of logits is a different, over-confident
  model). Streamed: one sample is loaded at a time (from a :class:`SampleCollector` on disk,
  one slot of a :class:`SampleBuffer`, or any iterable) and added to a running sum, so the
  memory is that of one sample plus the running sum, in float32 or wider.

  BatchNorm: the statistics are *stored with the sample*. Collect the BatchNorm running
  averages together with the weights (e.g. ``{"params": params, "batch_stats":
  batch_stats}``), and ``predict`` uses each sample's own statistics. This is cheap and
  matches what the chain computed: the samples are taken at the end of a cycle, where the
  step size is nearly 0, so the running averages (a memory of ~1/(1 − momentum) steps)
  describe the sample's own weights. Recomputing them with a pass over the training data per
  sample is more exact for samples taken at large step sizes and costs that pass; do it in
  ``predict`` if you need it.

  Args:
    predict: ``predict(sample, *args, **kwargs) -> probs`` of shape ``(N, K)``, rows summing
      to 1 (e.g. ``jax.nn.softmax`` of the logits, in evaluation mode); jit it for speed.
    samples: a :class:`SampleBuffer`, a :class:`SampleCollector`, any iterable of samples,
      or, with ``stacked=True``, one pytree of samples stacked on a leading axis.
    *args: passed to ``predict`` (e.g. the inputs).
    stacked: ``samples`` is a pytree of stacked samples (e.g. from
      :func:`collected_samples`).
    **kwargs: passed to ``predict``.

  Returns:
    The mean probabilities, shape ``(N, K)``.

  Raises:
    ValueError: if there are no samples, if a prediction is not a matrix of probabilities
      (e.g. logits), or if the predictions' shapes differ between samples.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from fsgld_optax import bayes
    >>> predict = lambda w, x: jax.nn.softmax(x * w[None], axis=-1)
    >>> samples = [jnp.array([1.0, -1.0]), jnp.array([-1.0, 1.0])]
    >>> print(bayes.average_predictions(predict, samples, jnp.ones((1, 2))))
    [[0.5 0.5]]
  """
  total: jax.Array | None = None
  count = 0
  for sample in _iterate(samples, stacked):
    probs = jnp.asarray(predict(sample, *args, **kwargs))
    _check_probs("predict's output", probs, "average_predictions")
    if total is None:
      total = probs.astype(jnp.promote_types(probs.dtype, jnp.float32))
    elif probs.shape != total.shape:
      raise ValueError(
        f"average_predictions: predict returned shape {probs.shape} for sample {count}, but "
        f"{total.shape} for sample 0."
      )
    else:
      total = total + probs
    count += 1
  if total is None:
    raise ValueError("average_predictions: samples is empty.")
  return total / count
