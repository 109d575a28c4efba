"""Models for the benchmarks and examples: CIFAR-style ResNets, a 1-D CNN, an MLP.

Linen models (:class:`ResNet`, :class:`CNN1D`, :class:`MLP`) take a required keyword
argument ``train``. Models with BatchNorm keep running statistics in the ``batch_stats``
collection: in training mode (``train=True``) batches are normalised with their own
statistics and the running averages are updated, so ``apply`` must be called with
``mutable=["batch_stats"]``; in evaluation mode (``train=False``) the running averages are
used and nothing is updated::

    variables = model.init(key, x, train=False)
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    variables = {"params": variables["params"], "batch_stats": updates["batch_stats"]}
    logits = model.apply(variables, x, train=False)

BatchNorm uses PyTorch's defaults (running-average momentum 0.1, i.e. Flax ``momentum=0.9``;
``epsilon=1e-5``), and convolutions carry no bias when followed by BatchNorm.

The NNX models (:class:`MLPNNX`, :class:`CNN1DNNX`) mirror their Linen counterparts layer
for layer and hold their state in the module; :class:`CNN1DNNX` switches BatchNorm mode with
``model.train()`` / ``model.eval()`` (or ``nnx.view``) or per call with ``train=``.

:func:`create_model` builds any of them by name.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx

__all__ = [
  "CNN1D",
  "CNN1DNNX",
  "MLP",
  "MLPNNX",
  "BasicBlock",
  "Bottleneck",
  "ResNet",
  "available_models",
  "create_model",
  "resnet18",
  "resnet34",
  "resnet50",
]

Dtype = Any

_BN_MOMENTUM = 0.9  # Flax convention: new = momentum * old + (1 - momentum) * batch.
_BN_EPSILON = 1e-5
_conv_init = nn.initializers.he_normal()


# --------------------------------------------------------------------------------------
# ResNets (Linen)
# --------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut.

  Attributes:
      features: Output channels.
      strides: Stride of the first convolution (and of the projection shortcut).
      dtype: Computation dtype.
  """

  features: int
  strides: int = 1
  dtype: Dtype = jnp.float32

  expansion = 1

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Applies the block to NHWC inputs."""
    norm = _batch_norm(train, self.dtype)
    y = _conv3x3(self.features, self.strides, self.dtype)(x)
    y = nn.relu(norm()(y))
    y = _conv3x3(self.features, 1, self.dtype)(y)
    y = norm()(y)
    return nn.relu(y + _shortcut(x, self.features, self.strides, norm, self.dtype))


class Bottleneck(nn.Module):
  """1x1 - 3x3 - 1x1 bottleneck block with 4x channel expansion.

  Attributes:
      features: Channels of the inner 3x3 convolution; the block outputs ``4 * features``.
      strides: Stride of the 3x3 convolution (and of the projection shortcut).
      dtype: Computation dtype.
  """

  features: int
  strides: int = 1
  dtype: Dtype = jnp.float32

  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Applies the block to NHWC inputs."""
    norm = _batch_norm(train, self.dtype)
    out_features = self.features * self.expansion
    y = nn.Conv(self.features, (1, 1), use_bias=False, kernel_init=_conv_init, dtype=self.dtype)(x)
    y = nn.relu(norm()(y))
    y = _conv3x3(self.features, self.strides, self.dtype)(y)
    y = nn.relu(norm()(y))
    y = nn.Conv(out_features, (1, 1), use_bias=False, kernel_init=_conv_init, dtype=self.dtype)(y)
    y = norm()(y)
    return nn.relu(y + _shortcut(x, out_features, self.strides, norm, self.dtype))


class ResNet(nn.Module):
  """CIFAR-style ResNet (He et al., 2016) as used in the fSGLD paper's code.

  Architecture on NHWC inputs (32x32 for CIFAR): a 3x3 stride-1 stem convolution with
  ``width`` channels, BatchNorm and ReLU (no max-pool); four stages of ``stage_sizes``
  blocks with ``width * (1, 2, 4, 8)`` channels, the first block of stages 2-4 using
  stride 2 and a 1x1 projection shortcut (also used wherever the channel count changes);
  global average pooling; a dense classifier. At ``width=64`` this is the ResNet of
  Kuang Liu's ``pytorch-cifar``, which the paper's official code uses, including its
  explicit ``padding=1`` on the 3x3 convolutions.

  Attributes:
      stage_sizes: Number of blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
      block_cls: :class:`BasicBlock` or :class:`Bottleneck`.
      num_classes: Number of output logits.
      width: Channels of the stem and the first stage; 64 is the standard network, a
          smaller value gives a proportionally thinner network (for fast tests).
      dtype: Computation dtype (parameters stay float32).
  """

  stage_sizes: Sequence[int]
  block_cls: type[BasicBlock] | type[Bottleneck]
  num_classes: int
  width: int = 64
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Maps images ``(N, H, W, C)`` to logits ``(N, num_classes)``."""
    norm = _batch_norm(train, self.dtype)
    y = _conv3x3(self.width, 1, self.dtype)(x)
    y = nn.relu(norm()(y))
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        y = self.block_cls(self.width * 2**stage, strides=strides, dtype=self.dtype)(y, train=train)
    y = jnp.mean(y, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype)(y)


def resnet18(num_classes: int = 10, *, width: int = 64, dtype: Dtype = jnp.float32) -> ResNet:
  """CIFAR-style ResNet-18: :class:`BasicBlock` stages ``(2, 2, 2, 2)``.

  11,173,962 parameters for 10 classes at ``width=64`` (11,220,132 for 100 classes).

  Args:
      num_classes: Number of output logits.
      width: Channels of the first stage (64 for the standard network).
      dtype: Computation dtype.

  Returns:
      An uninitialised :class:`ResNet`.
  """
  return ResNet((2, 2, 2, 2), BasicBlock, num_classes, width=width, dtype=dtype)


def resnet34(num_classes: int = 10, *, width: int = 64, dtype: Dtype = jnp.float32) -> ResNet:
  """CIFAR-style ResNet-34: :class:`BasicBlock` stages ``(3, 4, 6, 3)``.

  21,282,122 parameters for 10 classes at ``width=64`` (21,328,292 for 100 classes).

  Args:
      num_classes: Number of output logits.
      width: Channels of the first stage (64 for the standard network).
      dtype: Computation dtype.

  Returns:
      An uninitialised :class:`ResNet`.
  """
  return ResNet((3, 4, 6, 3), BasicBlock, num_classes, width=width, dtype=dtype)


def resnet50(num_classes: int = 10, *, width: int = 64, dtype: Dtype = jnp.float32) -> ResNet:
  """CIFAR-style ResNet-50: :class:`Bottleneck` stages ``(3, 4, 6, 3)``.

  23,520,842 parameters for 10 classes at ``width=64`` (23,705,252 for 100 classes).

  Args:
      num_classes: Number of output logits.
      width: Inner channels of the first stage (64 for the standard network).
      dtype: Computation dtype.

  Returns:
      An uninitialised :class:`ResNet`.
  """
  return ResNet((3, 4, 6, 3), Bottleneck, num_classes, width=width, dtype=dtype)


def _conv3x3(features: int, strides: int, dtype: Dtype) -> nn.Conv:
  return nn.Conv(
    features,
    (3, 3),
    strides=(strides, strides),
    padding=((1, 1), (1, 1)),
    use_bias=False,
    kernel_init=_conv_init,
    dtype=dtype,
  )


def _batch_norm(train: bool, dtype: Dtype) -> Callable[[], nn.BatchNorm]:
  return lambda: nn.BatchNorm(
    use_running_average=not train,
    momentum=_BN_MOMENTUM,
    epsilon=_BN_EPSILON,
    dtype=dtype,
  )


def _shortcut(
  x: jax.Array,
  features: int,
  strides: int,
  norm: Callable[[], nn.BatchNorm],
  dtype: Dtype,
) -> jax.Array:
  if strides == 1 and x.shape[-1] == features:
    return x
  y = nn.Conv(
    features,
    (1, 1),
    strides=(strides, strides),
    use_bias=False,
    kernel_init=_conv_init,
    dtype=dtype,
  )(x)
  return norm()(y)


# --------------------------------------------------------------------------------------
# 1-D CNN for MNIST-1D and MLP for digits (Linen)
# --------------------------------------------------------------------------------------


class CNN1D(nn.Module):
  """Small 1-D convolutional network for MNIST-1D.

  Input ``(N, L, C)`` (MNIST-1D: ``(N, 40, 1)``). One block per entry of ``features``:
  a length-``kernel_size`` convolution with ``'SAME'`` padding and no bias (stride 1 in the
  first block, stride 2 after that), BatchNorm, ReLU. The feature map is flattened
  (position matters in MNIST-1D) and mapped to logits by one dense layer. With the
  defaults ``features=(32, 64, 128)``, ``kernel_size=5`` the length goes 40 -> 40 -> 20
  -> 10 and the network has 64,618 parameters for 10 classes. Trained with plain SGD
  (learning rate 0.05, batch 128) on the clean 4,000-example training set it reaches
  about 88% test accuracy after 500 steps and about 94% after 2,000.

  Attributes:
      num_classes: Number of output logits.
      features: Channels of the convolutional blocks.
      kernel_size: Convolution kernel length.
      dtype: Computation dtype.
  """

  num_classes: int
  features: Sequence[int] = (32, 64, 128)
  kernel_size: int = 5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Maps signals ``(N, L, C)`` to logits ``(N, num_classes)``."""
    norm = _batch_norm(train, self.dtype)
    for i, features in enumerate(self.features):
      strides = 1 if i == 0 else 2
      x = nn.Conv(
        features,
        (self.kernel_size,),
        strides=(strides,),
        padding="SAME",
        use_bias=False,
        kernel_init=_conv_init,
        dtype=self.dtype,
      )(x)
      x = nn.relu(norm()(x))
    x = x.reshape((x.shape[0], -1))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x)


class MLP(nn.Module):
  """Fully connected ReLU network; inputs are flattened after the batch axis.

  With the defaults on 8x8 digits (64 inputs) and 10 classes it has 26,122 parameters.

  Attributes:
      num_classes: Number of output logits.
      hidden: Widths of the hidden layers.
      dtype: Computation dtype.
  """

  num_classes: int
  hidden: Sequence[int] = (128, 128)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Maps inputs ``(N, ...)`` to logits ``(N, num_classes)``; ``train`` is unused."""
    del train
    x = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
    return nn.Dense(self.num_classes, dtype=self.dtype)(x)


# --------------------------------------------------------------------------------------
# NNX versions
# --------------------------------------------------------------------------------------


class MLPNNX(nnx.Module):
  """NNX version of :class:`MLP` (same layers and parameter count).

  Args:
      num_classes: Number of output logits.
      in_features: Number of inputs after flattening (64 for 8x8 digits).
      hidden: Widths of the hidden layers.
      rngs: Random streams for parameter initialisation.
  """

  def __init__(
    self,
    num_classes: int,
    *,
    in_features: int = 64,
    hidden: Sequence[int] = (128, 128),
    rngs: nnx.Rngs,
  ) -> None:
    widths = [in_features, *hidden]
    self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(widths)])
    self.head = nnx.Linear(widths[-1], num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool | None = None) -> jax.Array:
    """Maps inputs ``(N, ...)`` to logits ``(N, num_classes)``; ``train`` is unused."""
    del train
    x = x.reshape((x.shape[0], -1))
    for layer in self.hidden:
      x = nnx.relu(layer(x))
    return self.head(x)


class CNN1DNNX(nnx.Module):
  """NNX version of :class:`CNN1D` (same layers and parameter count), with ``nnx.BatchNorm``.

  BatchNorm starts in training mode; switch with ``model.eval()`` / ``model.train()``, or
  override per call with ``train=``.

  Args:
      num_classes: Number of output logits.
      in_features: Input channels (1 for MNIST-1D).
      input_length: Input length (40 for MNIST-1D); fixes the size of the dense layer.
      features: Channels of the convolutional blocks.
      kernel_size: Convolution kernel length.
      rngs: Random streams for parameter initialisation.
  """

  def __init__(
    self,
    num_classes: int,
    *,
    in_features: int = 1,
    input_length: int = 40,
    features: Sequence[int] = (32, 64, 128),
    kernel_size: int = 5,
    rngs: nnx.Rngs,
  ) -> None:
    convs, norms = [], []
    length, channels = input_length, in_features
    for i, out in enumerate(features):
      strides = 1 if i == 0 else 2
      convs.append(
        nnx.Conv(
          channels,
          out,
          kernel_size=(kernel_size,),
          strides=(strides,),
          padding="SAME",
          use_bias=False,
          kernel_init=_conv_init,
          rngs=rngs,
        )
      )
      norms.append(nnx.BatchNorm(out, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, rngs=rngs))
      length, channels = math.ceil(length / strides), out
    self.convs = nnx.List(convs)
    self.norms = nnx.List(norms)
    self.head = nnx.Linear(length * channels, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool | None = None) -> jax.Array:
    """Maps signals ``(N, L, C)`` to logits ``(N, num_classes)``.

    Args:
        x: Input signals.
        train: ``True`` normalises with batch statistics and updates the running
            averages, ``False`` uses the running averages; ``None`` uses the module's
            mode (``model.train()`` / ``model.eval()``).

    Returns:
        Logits.
    """
    use_running_average = None if train is None else not train
    for conv, norm in zip(self.convs, self.norms, strict=True):
      x = nnx.relu(norm(conv(x), use_running_average=use_running_average))
    x = x.reshape((x.shape[0], -1))
    return self.head(x)


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------


def _nnx(cls: type[MLPNNX] | type[CNN1DNNX]) -> Callable[..., nnx.Module]:
  def build(num_classes: int, *, rngs: nnx.Rngs | int | None = None, **kwargs: Any):
    if rngs is None:
      raise ValueError(
        f"{cls.__name__} is an NNX model: pass rngs=nnx.Rngs(seed) (or an int seed)."
      )
    if isinstance(rngs, int):
      rngs = nnx.Rngs(rngs)
    return cls(num_classes, rngs=rngs, **kwargs)

  return build


_REGISTRY: dict[str, Callable[..., nn.Module | nnx.Module]] = {
  "mlp": lambda num_classes, **kw: MLP(num_classes, **kw),
  "cnn1d": lambda num_classes, **kw: CNN1D(num_classes, **kw),
  "resnet18": resnet18,
  "resnet34": resnet34,
  "resnet50": resnet50,
  "mlp_nnx": _nnx(MLPNNX),
  "cnn1d_nnx": _nnx(CNN1DNNX),
}


def available_models() -> tuple[str, ...]:
  """Names accepted by :func:`create_model`.

  Returns:
      The registered names, sorted.
  """
  return tuple(sorted(_REGISTRY))


def create_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module | nnx.Module:
  """Builds a model by name.

  Names are case-insensitive and ``-`` may stand for ``_`` (``"ResNet-18"`` works).
  Linen models (``mlp``, ``cnn1d``, ``resnet18``, ``resnet34``, ``resnet50``) come back
  uninitialised; NNX models (``mlp_nnx``, ``cnn1d_nnx``) are initialised and need
  ``rngs=nnx.Rngs(seed)`` (or an int seed).

  Args:
      name: One of :func:`available_models`.
      num_classes: Number of output logits.
      **kwargs: Passed to the model's constructor (e.g. ``width`` for the ResNets,
          ``hidden`` for the MLPs, ``features`` for the 1-D CNNs, ``rngs`` for NNX).

  Returns:
      A Flax Linen module or an initialised Flax NNX module.

  Raises:
      ValueError: For an unknown name, a non-positive ``num_classes``, or an NNX model
          without ``rngs``.

  Examples:
      >>> import jax, jax.numpy as jnp
      >>> model = create_model("resnet18", 10)
      >>> shapes = jax.eval_shape(
      ...     lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
      ... )
      >>> sum(x.size for x in jax.tree.leaves(shapes["params"]))
      11173962
  """
  key = name.strip().lower().replace("-", "_")
  if key.startswith("resnet_"):
    key = "resnet" + key.removeprefix("resnet_")
  if key not in _REGISTRY:
    raise ValueError(f"Unknown model {name!r}; choose one of {', '.join(available_models())}.")
  if not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
  return _REGISTRY[key](num_classes, **kwargs)
