"""Flax's own examples, ported to fSGLD as a user would, with tiny models and random data.

* ``examples/imagenet``: a Linen ResNet block with BatchNorm, a ``TrainState`` subclass with
  ``batch_stats``, ``jax.pmap(train_step, axis_name="batch")`` over replicated state, the loss
  and the statistics averaged over devices;
* ``examples/mnist`` (NNX): BatchNorm and Dropout, an ``nnx.Rngs`` passed to the loss,
  ``nnx.MultiMetric`` updated with the logits, ``nnx.jit``; with ``split_batch`` and the
  logits concatenated in batch order.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import jax_utils, nnx
from flax.training import train_state

import fsgld_optax
import fsgld_optax.flax

DEVICES = 2


class Block(nn.Module):
  """A residual block of examples/imagenet/models.py, shrunk: Conv-BatchNorm-ReLU plus skip."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9)
    y = nn.relu(norm()(nn.Conv(2, (3, 3))(x)))
    return nn.Dense(4)(jnp.mean(x + y, axis=(1, 2)))


class ImageNetState(train_state.TrainState):
  """As in examples/imagenet/train.py."""

  batch_stats: Any


MODEL = Block()


def imagenet_loss(params: Any, batch_stats: Any, batch: dict) -> Any:
  logits, new_state = MODEL.apply(
    {"params": params, "batch_stats": batch_stats}, batch["image"], mutable=["batch_stats"]
  )
  one_hot = jax.nn.one_hot(batch["label"], 4)
  loss = jnp.mean(optax.softmax_cross_entropy(logits=logits, labels=one_hot))
  return loss, (new_state["batch_stats"], logits)


def test_imagenet_pmap_train_step_equals_the_per_device_average() -> None:
  variables = MODEL.init(jax.random.key(0), jnp.ones((1, 4, 4, 2)), train=False)
  state = ImageNetState.create(
    apply_fn=MODEL.apply,
    params=variables["params"],
    batch_stats=variables["batch_stats"],
    tx=fsgld_optax.fsgld(0.1, 1e6, sigma=0.1, key=0),
  )
  rng = np.random.default_rng(0)
  batch = {
    "image": jnp.asarray(rng.normal(size=(DEVICES, 4, 4, 4, 2)), jnp.float32),
    "label": jnp.asarray(rng.integers(0, 4, (DEVICES, 4))),
  }
  options = dict(n_perturbations=2, has_aux=True, aux_reduction="mean")
  step = fsgld_optax.flax.linen_train_step(imagenet_loss, axis_name="batch", **options)

  def train_step(state: ImageNetState, batch: dict) -> Any:
    state, (loss, logits) = step(state, batch)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return state, jax.lax.pmean({"loss": loss, "accuracy": accuracy}, "batch")

  p_train_step = jax.pmap(train_step, axis_name="batch", devices=jax.devices()[:DEVICES])
  new_state, metrics = p_train_step(jax_utils.replicate(state, jax.devices()[:DEVICES]), batch)

  # Replicas stay identical: the same ε and ξ everywhere, averaged gradients and statistics.
  for leaf in jax.tree.leaves((new_state.params, new_state.batch_stats)):
    np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[0], leaf.shape))
  # Reference: one device at a time. The update is affine in the gradient, and ε, ξ are the
  # same on every device, so the average of per-device steps equals the pmap'd step.
  single = jax.jit(fsgld_optax.flax.linen_train_step(imagenet_loss, **options))
  parts = [single(state, jax.tree.map(lambda b, d=d: b[d], batch)) for d in range(DEVICES)]
  average = lambda *xs: sum(xs) / DEVICES
  np.testing.assert_allclose(
    metrics["loss"][0], average(*[loss for _, (loss, _) in parts]), rtol=1e-5
  )
  for got, want in zip(
    jax.tree.leaves((new_state.params, new_state.batch_stats)),
    jax.tree.leaves(jax.tree.map(average, *[(p.params, p.batch_stats) for p, _ in parts])),
    strict=True,
  ):
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)
  assert int(fsgld_optax.find_fsgld_state(new_state.opt_state).count[0]) == 1


class CNN(nnx.Module):
  """examples/mnist/train.py's CNN, shrunk: the Rngs is passed at call time."""

  def __init__(self, rngs: nnx.Rngs) -> None:
    self.conv = nnx.Conv(1, 3, kernel_size=(3, 3), rngs=rngs)
    self.batch_norm = nnx.BatchNorm(3, rngs=rngs)
    self.dropout = nnx.Dropout(rate=0.25)
    self.linear = nnx.Linear(3 * 3 * 3, 4, rngs=rngs)

  def __call__(self, x: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
    x = nnx.avg_pool(nnx.relu(self.batch_norm(self.conv(x))), (2, 2), strides=(2, 2))
    return self.linear(self.dropout(x.reshape(x.shape[0], -1), rngs=rngs))


def mnist_loss(model: CNN, batch: dict, rngs: nnx.Rngs) -> Any:
  logits = model(batch["image"], rngs)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
  return loss, logits


def test_nnx_mnist_train_step_with_rngs_metrics_and_split_batch() -> None:
  model = CNN(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, fsgld_optax.fsgld(0.05, 1e8, key=0), wrt=nnx.Param)
  metrics = nnx.MultiMetric(accuracy=nnx.metrics.Accuracy(), loss=nnx.metrics.Average("loss"))
  grad_fn = fsgld_optax.flax.nnx_value_and_grad(
    mnist_loss, n_perturbations=2, has_aux=True, split_batch=True, aux_reduction="concat"
  )

  @nnx.jit
  def train_step(
    model: CNN, optimizer: nnx.Optimizer, metrics: nnx.MultiMetric, batch: dict, rngs: nnx.Rngs
  ) -> None:
    (loss, logits), grads = grad_fn(model, optimizer, batch, rngs)
    metrics.update(loss=loss, logits=logits, labels=batch["label"])
    optimizer.update(model, grads)

  rng = np.random.default_rng(0)
  batch = {
    "image": jnp.asarray(rng.normal(size=(8, 6, 6, 1)), jnp.float32),
    "label": jnp.asarray(rng.integers(0, 4, 8)),
  }
  rngs = nnx.Rngs(0)
  model.train()
  mean_before = model.batch_norm.mean[...]
  for _ in range(2):
    train_step(model, optimizer, metrics, batch, rngs)
  # The logits of the whole batch came back in order (Accuracy checks their shape against the
  # labels'); the Rngs advanced once per step; BatchNorm statistics moved.
  assert metrics.accuracy.count[...] == 16
  assert np.isfinite(float(metrics.compute()["loss"]))
  assert int(rngs.default.count[...]) == 2
  assert not np.allclose(model.batch_norm.mean[...], mean_before)
  assert int(fsgld_optax.find_fsgld_state(nnx.as_pure(optimizer.opt_state)).count) == 2
