"""Tests for benchmarks/models.py: shapes, parameter counts, BatchNorm modes, registry."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from benchmarks import models
from benchmarks.models import CNN1D, CNN1DNNX, MLP, MLPNNX, create_model


# Real initialisations use "rbg" keys: on CPU, XLA compiles each threefry draw of a rank-3 or
# rank-4 kernel in about a second, which would dominate these tests.
def _key(seed: int = 0) -> jax.Array:
  return jax.random.key(seed, impl="rbg")


def _rngs(seed: int = 0) -> nnx.Rngs:
  return nnx.Rngs(_key(seed))


def _normal(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _init_shapes(model, x_shape):
  x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


# Parameter counts of the CIFAR-style ResNets at full width (width=64), i.e. conv kernels,
# BatchNorm scales and biases, and the dense head, but not the BatchNorm running averages.
# They equal the PyTorch counts of the paper's code (Kuang Liu's pytorch-cifar ResNets):
# e.g. ResNet-18 = 11,168,832 body parameters + 512 * K + K head parameters.
@pytest.mark.parametrize(
  ("name", "num_classes", "num_params", "num_batch_stats"),
  [
    ("resnet18", 10, 11_173_962, 9_600),
    ("resnet18", 100, 11_220_132, 9_600),
    ("resnet34", 10, 21_282_122, 17_024),
    ("resnet34", 100, 21_328_292, 17_024),
    ("resnet50", 10, 23_520_842, 53_120),
  ],
)
def test_resnet_parameter_counts(name, num_classes, num_params, num_batch_stats):
  variables = _init_shapes(create_model(name, num_classes), (1, 32, 32, 3))
  assert _count(variables["params"]) == num_params
  assert _count(variables["batch_stats"]) == num_batch_stats


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
@pytest.mark.parametrize("train", [True, False])
def test_resnet_output_shape_full_width(name, train):
  model = create_model(name, 100)
  variables = _init_shapes(model, (1, 32, 32, 3))
  x = jax.ShapeDtypeStruct((3, 32, 32, 3), jnp.float32)
  out = jax.eval_shape(
    lambda v, x: model.apply(v, x, train=train, mutable=["batch_stats"])[0], variables, x
  )
  assert out.shape == (3, 100)
  assert out.dtype == jnp.float32


def test_resnet_is_cifar_style():
  # 3x3 stride-1 stem, no max-pool: the last stage sees 4x4 maps on 32x32 inputs.
  model = create_model("resnet18", 10, width=8)
  variables = _init_shapes(model, (1, 32, 32, 3))
  params = variables["params"]
  assert params["Conv_0"]["kernel"].shape == (3, 3, 3, 8)
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  _, state = jax.eval_shape(
    lambda v, x: model.apply(v, x, train=False, capture_intermediates=True), variables, x
  )
  last_block = sorted(k for k in state["intermediates"] if k.startswith("BasicBlock"))[-1]
  assert state["intermediates"][last_block]["__call__"][0].shape == (1, 4, 4, 64)


def test_resnet_width_scales_channels():
  # Convolutions after the stem scale with width**2, so they shrink by (64 / 16)**2 = 16;
  # the stem (3 input channels), BatchNorm and the head scale linearly with width.
  def linear_part(width):
    return 27 * width + 150 * width + 8 * width * 10 + 10

  full = _count(_init_shapes(create_model("resnet18", 10), (1, 32, 32, 3))["params"])
  thin = _count(_init_shapes(create_model("resnet18", 10, width=16), (1, 32, 32, 3))["params"])
  assert full - linear_part(64) == 16 * (thin - linear_part(16))


@pytest.fixture(scope="module")
def small_resnet():
  # One block per stage still has the stem, strided stages and projection shortcuts.
  model = models.ResNet((1, 1, 1, 1), models.BasicBlock, 10, width=4)
  x = _normal((4, 8, 8, 3))
  variables = jax.jit(lambda x: model.init(_key(), x, train=False))(x)
  return model, variables, x


def test_batchnorm_train_mode_updates_statistics(small_resnet):
  model, variables, x = small_resnet
  logits, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
    variables, x
  )
  assert logits.shape == (4, 10)
  old = jax.tree.leaves(variables["batch_stats"])
  new = jax.tree.leaves(updates["batch_stats"])
  assert len(old) == len(new)
  assert all(not np.allclose(a, b) for a, b in zip(old, new, strict=True))


def test_batchnorm_eval_mode_leaves_statistics(small_resnet):
  model, variables, x = small_resnet
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=["batch_stats"]))
  logits, updates = apply(variables, x)
  for a, b in zip(
    jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(updates["batch_stats"]), strict=True
  ):
    np.testing.assert_array_equal(a, b)
  # Eval mode normalises with the running averages: each example is independent of the batch.
  single, _ = apply(variables, x[:1])
  np.testing.assert_allclose(single, logits[:1], rtol=1e-5, atol=1e-6)


def test_batchnorm_train_mode_uses_batch_statistics(small_resnet):
  model, variables, x = small_resnet
  apply = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])[0])
  assert not np.allclose(apply(variables, x)[:2], apply(variables, x[:2]), atol=1e-4)


def test_cnn1d_shapes_and_parameter_count():
  model = create_model("cnn1d", 10)
  x = jnp.zeros((5, 40, 1))
  variables = jax.jit(lambda x: model.init(_key(), x, train=False))(x)
  # Convs 1*32*5 + 32*64*5 + 64*128*5, BatchNorm 2 * (32 + 64 + 128), head 10*128*10 + 10.
  assert _count(variables["params"]) == 64_618
  logits, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
    variables, _normal(x.shape)
  )
  assert logits.shape == (5, 10)
  changed = jax.tree.map(
    lambda a, b: not np.allclose(a, b), variables["batch_stats"], updates["batch_stats"]
  )
  assert all(jax.tree.leaves(changed))


def test_mlp_shapes_and_parameter_count():
  model = create_model("mlp", 10)
  x = jnp.zeros((3, 8, 8, 1))  # Inputs are flattened: images work as well as (N, 64).
  variables = jax.jit(lambda x: model.init(_key(), x, train=False))(x)
  assert set(variables) == {"params"}
  assert _count(variables["params"]) == 64 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
  assert model.apply(variables, x, train=True).shape == (3, 10)


def test_nnx_mlp_matches_linen_parameter_count():
  linen = MLP(7, hidden=(32, 16))
  linen_params = linen.init(_key(), jnp.zeros((1, 20)), train=False)["params"]
  model = MLPNNX(7, in_features=20, hidden=(32, 16), rngs=_rngs())
  assert _count(nnx.state(model, nnx.Param)) == _count(linen_params)
  out = nnx.jit(lambda m, x: m(x))(model, jnp.ones((4, 4, 5)))
  assert out.shape == (4, 7)


def test_nnx_cnn1d_matches_linen_parameter_count():
  linen = CNN1D(10)
  variables = jax.eval_shape(lambda: linen.init(_key(), jnp.zeros((1, 40, 1)), train=False))
  model = nnx.eval_shape(lambda: CNN1DNNX(10, rngs=_rngs()))
  assert _count(nnx.state(model, nnx.Param)) == _count(variables["params"])
  assert _count(nnx.state(model, nnx.BatchStat)) == _count(variables["batch_stats"])


def _batch_stats(model):
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.BatchStat))]


@nnx.jit(static_argnames="train")
def _nnx_forward(model, x, train=None):
  return model(x, train=train)


def test_nnx_cnn1d_batchnorm_modes():
  model = CNN1DNNX(10, rngs=_rngs())
  x = _normal((6, 40, 1))
  initial = _batch_stats(model)

  model.eval()
  assert _nnx_forward(model, x).shape == (6, 10)
  for a, b in zip(initial, _batch_stats(model), strict=True):
    np.testing.assert_array_equal(a, b)

  model.train()
  _nnx_forward(model, x)
  after_train = _batch_stats(model)
  assert all(not np.allclose(a, b) for a, b in zip(initial, after_train, strict=True))

  # A per-call override beats the module's mode.
  _nnx_forward(model, x, train=False)
  for a, b in zip(after_train, _batch_stats(model), strict=True):
    np.testing.assert_array_equal(a, b)
  model.eval()
  _nnx_forward(model, x, train=True)
  assert all(not np.allclose(a, b) for a, b in zip(after_train, _batch_stats(model), strict=True))


@pytest.mark.parametrize("name", models.available_models())
def test_create_model_builds_every_name(name):
  if name.endswith("_nnx"):
    model = nnx.eval_shape(lambda: create_model(name, 3, rngs=_rngs()))
    assert isinstance(model, nnx.Module)
  else:
    assert isinstance(create_model(name, 3), models.nn.Module)


@pytest.mark.parametrize("alias", ["ResNet-18", "resnet_18", " RESNET18 "])
def test_create_model_aliases(alias):
  model = create_model(alias, 10)
  assert isinstance(model, models.ResNet)
  assert tuple(model.stage_sizes) == (2, 2, 2, 2)


def test_create_model_errors():
  with pytest.raises(ValueError, match=r"Unknown model 'resnet19'.*resnet18"):
    create_model("resnet19", 10)
  with pytest.raises(ValueError, match="rngs"):
    create_model("cnn1d_nnx", 10)
  with pytest.raises(ValueError, match="num_classes"):
    create_model("mlp", 0)
  assert isinstance(nnx.eval_shape(lambda: create_model("mlp_nnx", 10, rngs=0)), MLPNNX)


def test_docstring_examples():
  result = doctest.testmod(
    models, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS, verbose=False
  )
  assert result.attempted > 0
  assert result.failed == 0
