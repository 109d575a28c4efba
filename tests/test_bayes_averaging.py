"""Bayesian model averaging: equals the manual average; BatchNorm statistics per sample."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from fsgld_optax import bayes


def _predict(w, x):
  return jax.nn.softmax(x @ w, axis=-1)


def _samples(n: int = 5):
  keys = jax.random.split(jax.random.key(0), n)
  return [jax.random.normal(k, (4, 3)) for k in keys]


X = jax.random.normal(jax.random.key(1), (6, 4))


def _manual(samples) -> np.ndarray:
  return np.mean([np.asarray(_predict(w, X), np.float64) for w in samples], axis=0)


def test_average_of_a_list_equals_the_manual_average() -> None:
  samples = _samples()
  average = bayes.average_predictions(jax.jit(_predict), samples, X)
  np.testing.assert_allclose(average, _manual(samples), rtol=1e-6)
  np.testing.assert_allclose(np.sum(average, axis=1), 1.0, rtol=1e-6)
  # Not the softmax of the mean logits.
  mean_logits = jax.nn.softmax(X @ jnp.mean(jnp.stack(samples), 0), axis=-1)
  assert np.max(np.abs(average - mean_logits)) > 1e-2


def test_average_of_a_wrapped_ring_buffer_stacked_samples_and_a_disk_collector(
  tmp_path: Path,
) -> None:
  samples = _samples(5)
  buffer = bayes.init_sample_buffer(samples[0], capacity=3)
  for w in samples:
    buffer = bayes.add_sample(buffer, w)  # keeps the last 3, wrapped around
  expected = _manual(samples[-3:])
  np.testing.assert_allclose(bayes.average_predictions(_predict, buffer, X), expected, rtol=1e-6)
  stacked = bayes.collected_samples(buffer)
  got = bayes.average_predictions(_predict, stacked, X, stacked=True)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  collector = bayes.SampleCollector(tmp_path)
  for step, w in enumerate(samples):
    collector.add(w, step=step)
  got = bayes.average_predictions(_predict, collector, X)
  np.testing.assert_allclose(got, _manual(samples), rtol=1e-6)
  collector.close()


def test_average_is_streamed() -> None:
  # A generator is consumed one sample at a time, each prediction made before the next load.
  events = []

  def generate():
    for i, w in enumerate(_samples(3)):
      events.append(f"load {i}")
      yield w

  def predict(w, x):
    events.append("predict")
    return _predict(w, x)

  bayes.average_predictions(predict, generate(), X)
  assert events == ["load 0", "predict", "load 1", "predict", "load 2", "predict"]


def test_average_errors() -> None:
  with pytest.raises(ValueError, match="samples is empty"):
    bayes.average_predictions(_predict, [], X)
  with pytest.raises(ValueError, match="predict's output must be probabilities"):
    bayes.average_predictions(lambda w, x: x @ w, _samples(2), X)  # logits
  with pytest.raises(ValueError, match="pass stacked=True"):
    bayes.average_predictions(_predict, {"w": jnp.stack(_samples(2))}, X)
  shapes = iter([X, X[:3]])
  with pytest.raises(ValueError, match=r"shape \(3, 3\) for sample 1"):
    bayes.average_predictions(lambda w, _: _predict(w, next(shapes)), _samples(2), None)


class _BatchNormNet(nn.Module):
  @nn.compact
  def __call__(self, x, *, train: bool):
    x = nn.Dense(8)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
    return nn.Dense(3)(nn.relu(x))


def test_batchnorm_statistics_travel_with_each_sample() -> None:
  """Samples are {"params", "batch_stats"}: each prediction uses its own sample's statistics."""
  model = _BatchNormNet()
  x_train = jax.random.normal(jax.random.key(2), (32, 4))
  variables = model.init(jax.random.key(3), x_train, train=False)
  samples = []
  for i in range(3):
    params = jax.tree.map(lambda p, i=i: p * (1 + 0.3 * i), variables["params"])
    shifted = x_train * (1 + i) + 2.0 * i  # a different input law per sample
    _, updates = model.apply(
      {"params": params, "batch_stats": variables["batch_stats"]},
      shifted,
      train=True,
      mutable=["batch_stats"],
    )
    samples.append({"params": params, "batch_stats": updates["batch_stats"]})

  @jax.jit
  def predict(sample, x):
    return jax.nn.softmax(model.apply(sample, x, train=False), axis=-1)

  average = bayes.average_predictions(predict, samples, X)
  manual = np.mean(
    [
      np.asarray(jax.nn.softmax(model.apply(s, X, train=False), axis=-1), np.float64)
      for s in samples
    ],
    axis=0,
  )
  np.testing.assert_allclose(average, manual, rtol=1e-6)
  # The statistics matter: one shared set of statistics gives a different average.
  shared = [{"params": s["params"], "batch_stats": samples[0]["batch_stats"]} for s in samples]
  assert np.max(np.abs(bayes.average_predictions(predict, shared, X) - average)) > 1e-3
