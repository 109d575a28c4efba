"""Offline datasets, synthetic label noise, CIFAR-N loading and augmentation.

Everything here works without network access:

* :func:`load_mnist1d` generates MNIST-1D with the ``mnist1d`` package's procedural
  generator (``mnist1d.data.make_dataset``; never its download path) and caches the arrays
  in a local ``.npz`` file.
* :func:`load_digits` uses scikit-learn's bundled 8x8 digits.
* :func:`load_cifar_n` reads CIFAR-10N / CIFAR-100N from files the user already has.

Loaders return a :class:`Dataset` of plain NumPy arrays. Training labels may be noisy
(``y_train``) while the clean ones are kept alongside (``y_train_clean``); test labels are
always clean.

Randomness contract: every random choice is made by a NumPy ``Generator`` (or, for
:func:`augment`, a JAX key) derived from an explicit seed, so equal arguments give equal
results, and the global NumPy and ``random`` states are left as they were (the MNIST-1D
generator seeds and uses them; its state changes are undone). Loaders derive independent
streams from one ``seed`` for the train/test split, the label noise and the validation
split, so changing ``val_fraction`` leaves the noisy labels unchanged, and the validation
split does not look at the labels, so clean and noisy versions split identically.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import pickle
import random
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
  "CIFAR10N_LABEL_SETS",
  "CIFAR10_MEAN",
  "CIFAR10_STD",
  "CIFAR100N_LABEL_SETS",
  "CIFAR100_MEAN",
  "CIFAR100_STD",
  "Dataset",
  "LabelNoise",
  "add_label_noise",
  "augment",
  "default_cache_dir",
  "iterate_batches",
  "load_cifar",
  "load_cifar_n",
  "load_digits",
  "load_mnist1d",
  "normalize_cifar",
  "parse_label_noise",
  "read_cifar_n_labels",
  "split_validation",
]

# Stream ids mixed into a loader's seed (see the randomness contract above).
_STREAM_SPLIT = 0
_STREAM_NOISE = 1
_STREAM_VAL = 2


# --------------------------------------------------------------------------------------
# Container
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
  """A classification dataset as NumPy arrays.

  Attributes:
      x_train: Training inputs, float32, shape ``(N, ...)``.
      y_train: Training labels as used for training (noisy if noise was added), int32 ``(N,)``.
      y_train_clean: Clean training labels, int32 ``(N,)``.
      x_test: Test inputs, float32, shape ``(M, ...)``.
      y_test: Clean test labels, int32 ``(M,)``.
      num_classes: Number of classes ``K``; labels lie in ``[0, K)``.
      x_val: Validation inputs carved from the training set, or ``None``.
      y_val: Validation labels (noisy like ``y_train``), or ``None``.
      y_val_clean: Clean validation labels, or ``None``.
      name: Short description, e.g. ``"mnist1d[symmetric:0.4]"``.
  """

  x_train: np.ndarray
  y_train: np.ndarray
  y_train_clean: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  x_val: np.ndarray | None = None
  y_val: np.ndarray | None = None
  y_val_clean: np.ndarray | None = None
  name: str = ""

  def __post_init__(self) -> None:
    n, m = len(self.x_train), len(self.x_test)
    if len(self.y_train) != n or len(self.y_train_clean) != n:
      raise ValueError("x_train, y_train and y_train_clean must have the same length.")
    if len(self.y_test) != m:
      raise ValueError("x_test and y_test must have the same length.")
    val = (self.x_val, self.y_val, self.y_val_clean)
    if any(v is None for v in val) and not all(v is None for v in val):
      raise ValueError("x_val, y_val and y_val_clean must be given together.")

  @property
  def noise_rate(self) -> float:
    """Realised fraction of training labels that differ from the clean ones."""
    if len(self.y_train) == 0:
      return 0.0
    return float(np.mean(self.y_train != self.y_train_clean))

  def __repr__(self) -> str:
    def shape(a: np.ndarray | None) -> str:
      return "None" if a is None else f"{a.dtype}{list(a.shape)}"

    return (
      f"Dataset(name={self.name!r}, num_classes={self.num_classes}, "
      f"x_train={shape(self.x_train)}, x_test={shape(self.x_test)}, "
      f"x_val={shape(self.x_val)}, noise_rate={self.noise_rate:.4f})"
    )


# --------------------------------------------------------------------------------------
# Label noise
# --------------------------------------------------------------------------------------

NoiseKind = Literal["none", "symmetric", "pairflip"]
_NOISE_KINDS: tuple[str, ...] = ("none", "symmetric", "pairflip")


@dataclasses.dataclass(frozen=True)
class LabelNoise:
  """A synthetic label-noise model.

  * ``symmetric``: each label is, with probability ``rate``, replaced by a class drawn
    uniformly from the *other* ``K - 1`` classes (a replaced label never keeps its class),
    so the expected fraction of wrong labels is exactly ``rate``. This is the
    transition matrix with ``1 - rate`` on the diagonal and ``rate / (K - 1)`` elsewhere.
    (Some papers instead draw from all ``K`` classes, which gives ``rate * (K - 1) / K``.)
  * ``pairflip``: class ``c`` becomes ``(c + 1) mod K`` with probability ``rate``.
  * ``none``: labels are unchanged (``rate`` is 0).

  Attributes:
      kind: ``"none"``, ``"symmetric"`` or ``"pairflip"``.
      rate: Flip probability in ``[0, 1)``.
  """

  kind: NoiseKind = "none"
  rate: float = 0.0

  def __post_init__(self) -> None:
    if self.kind not in _NOISE_KINDS:
      raise ValueError(f"Unknown label noise kind {self.kind!r}; expected one of {_NOISE_KINDS}.")
    if not isinstance(self.rate, int | float) or not 0.0 <= self.rate < 1.0:
      raise ValueError(f"Label noise rate must be in [0, 1), got {self.rate!r}.")
    if self.kind == "none" and self.rate != 0.0:
      raise ValueError("Label noise kind 'none' takes no rate.")

  def __str__(self) -> str:
    return "none" if self.kind == "none" else f"{self.kind}:{self.rate:g}"


def parse_label_noise(spec: str | LabelNoise | None) -> LabelNoise:
  """Parses a label-noise specification such as ``"symmetric:0.4"``.

  Args:
      spec: ``"none"`` (or ``None``), ``"symmetric:RATE"`` or ``"pairflip:RATE"`` with
          ``RATE`` in ``[0, 1)``; case and surrounding spaces are ignored. A
          :class:`LabelNoise` is returned unchanged.

  Returns:
      The :class:`LabelNoise`.

  Raises:
      ValueError: For an unknown kind, a missing or malformed rate, or a rate outside
          ``[0, 1)``.

  Examples:
      >>> parse_label_noise("symmetric:0.4")
      LabelNoise(kind='symmetric', rate=0.4)
      >>> parse_label_noise("none")
      LabelNoise(kind='none', rate=0.0)
  """
  if spec is None:
    return LabelNoise()
  if isinstance(spec, LabelNoise):
    return spec
  if not isinstance(spec, str):
    raise ValueError(f"Label noise must be a string like 'symmetric:0.4', got {spec!r}.")
  kind, sep, rate_text = spec.strip().lower().partition(":")
  kind = kind.strip()
  usage = "expected 'none', 'symmetric:RATE' or 'pairflip:RATE' with RATE in [0, 1)"
  if kind not in _NOISE_KINDS:
    raise ValueError(f"Unknown label noise kind {kind!r} in {spec!r}; {usage}.")
  if kind == "none":
    if sep and rate_text.strip() not in ("", "0", "0.0"):
      raise ValueError(f"Label noise 'none' takes no rate, got {spec!r}.")
    return LabelNoise()
  if not sep or not rate_text.strip():
    raise ValueError(f"Label noise {spec!r} needs a rate; {usage}.")
  try:
    rate = float(rate_text)
  except ValueError:
    raise ValueError(f"Malformed label noise rate in {spec!r}; {usage}.") from None
  if not 0.0 <= rate < 1.0:  # also rejects nan
    raise ValueError(f"Label noise rate must be in [0, 1), got {rate_text.strip()!r}.")
  return LabelNoise(kind, rate)  # type: ignore[arg-type]


def add_label_noise(
  labels: np.ndarray,
  num_classes: int,
  noise: str | LabelNoise | None,
  seed: int | Sequence[int] | np.random.SeedSequence,
) -> np.ndarray:
  """Returns a noisy copy of ``labels`` (see :class:`LabelNoise` for the noise models).

  Each label is flipped independently with probability ``rate``, so the realised noise
  rate is Binomial(N, rate) / N.

  Args:
      labels: Integer labels in ``[0, num_classes)``.
      num_classes: Number of classes ``K`` (at least 2 when the rate is positive).
      noise: A :class:`LabelNoise` or a string for :func:`parse_label_noise`.
      seed: Seed for ``numpy.random.default_rng``.

  Returns:
      Noisy labels, same shape and dtype as ``labels``.

  Raises:
      ValueError: For labels outside ``[0, num_classes)`` or too few classes.

  Examples:
      >>> y = np.arange(10) % 5
      >>> add_label_noise(y, 5, "pairflip:0.5", seed=0)
      array([0, 2, 3, 4, 4, 0, 1, 2, 3, 4])
  """
  noise = parse_label_noise(noise)
  labels = np.asarray(labels)
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"Labels must be integers, got dtype {labels.dtype}.")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"Labels must lie in [0, {num_classes}).")
  if noise.rate == 0.0:
    return labels.copy()
  if num_classes < 2:
    raise ValueError(f"Label noise needs at least 2 classes, got {num_classes}.")
  rng = np.random.default_rng(seed)
  flip = rng.random(labels.shape) < noise.rate
  if noise.kind == "symmetric":
    # An offset uniform in {1, ..., K-1} moves to a uniformly random *other* class.
    offset = rng.integers(1, num_classes, size=labels.shape)
  else:
    offset = np.ones_like(labels)
  noisy = np.where(flip, (labels + offset) % num_classes, labels)
  return noisy.astype(labels.dtype)


# --------------------------------------------------------------------------------------
# Splits and batching
# --------------------------------------------------------------------------------------


def _stratified_split(
  y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """Returns sorted (keep, held_out) indices, holding out ``fraction`` of every class."""
  held = []
  for c in np.unique(y):
    idx = rng.permutation(np.flatnonzero(y == c))
    held.append(idx[: round(fraction * len(idx))])
  held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
  keep = np.setdiff1d(np.arange(len(y)), held_out)
  return keep, held_out


def _check_fraction(name: str, fraction: float) -> None:
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"{name} must be in [0, 1), got {fraction!r}.")


def split_validation(
  dataset: Dataset, fraction: float, seed: int | Sequence[int] | np.random.SeedSequence
) -> Dataset:
  """Carves a validation set out of the training set.

  ``round(fraction * N)`` training examples, chosen uniformly at random without looking at
  the labels (so a clean and a noisy version of a dataset split the same way for the same
  seed), form the validation set; both parts keep the original order.

  Args:
      dataset: A dataset without a validation split.
      fraction: Fraction of the training set to hold out, in ``[0, 1)``.
      seed: Seed for ``numpy.random.default_rng``.

  Returns:
      A new :class:`Dataset`; with ``fraction == 0`` the input is returned unchanged.

  Raises:
      ValueError: If ``fraction`` is outside ``[0, 1)`` or the dataset already has a
          validation split.
  """
  _check_fraction("fraction", fraction)
  if dataset.x_val is not None:
    raise ValueError("The dataset already has a validation split.")
  if fraction == 0.0:
    return dataset
  n = len(dataset.y_train)
  val = np.sort(np.random.default_rng(seed).permutation(n)[: round(fraction * n)])
  keep = np.setdiff1d(np.arange(n), val)
  return dataclasses.replace(
    dataset,
    x_train=dataset.x_train[keep],
    y_train=dataset.y_train[keep],
    y_train_clean=dataset.y_train_clean[keep],
    x_val=dataset.x_train[val],
    y_val=dataset.y_train[val],
    y_val_clean=dataset.y_train_clean[val],
  )


def _seed_entropy(key_or_seed: Any) -> list[int]:
  if isinstance(key_or_seed, int | np.integer):
    if key_or_seed < 0:
      raise ValueError(f"Seeds must be non-negative, got {key_or_seed}.")
    return [int(key_or_seed)]
  arr = key_or_seed
  if isinstance(arr, jax.Array) and jnp.issubdtype(arr.dtype, jax.dtypes.prng_key):
    arr = jax.random.key_data(arr)
  arr = np.asarray(arr)
  if not np.issubdtype(arr.dtype, np.unsignedinteger):
    raise ValueError(f"Expected an int seed or a JAX PRNG key, got {type(key_or_seed).__name__}.")
  return [int(v) for v in arr.ravel()]


def iterate_batches(
  key_or_seed: int | jax.Array,
  x: np.ndarray,
  y: np.ndarray,
  batch_size: int,
  *,
  epoch: int = 0,
  drop_last: bool = True,
  shuffle: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields the mini-batches of one epoch.

  The permutation comes from ``numpy.random.default_rng([*seed, epoch])``: it is fixed by
  the seed and the epoch number, and differs between epochs.

  Args:
      key_or_seed: A non-negative int or a JAX PRNG key (typed or raw ``uint32``).
      x: Inputs, shape ``(N, ...)``.
      y: Labels, shape ``(N,)``.
      batch_size: Examples per batch.
      epoch: Epoch number; selects the permutation.
      drop_last: Drop the final partial batch (so every batch has ``batch_size`` examples
          and a jitted step compiles once). With ``N < batch_size`` nothing is yielded.
      shuffle: Permute the examples; ``False`` keeps the data order.

  Yields:
      ``(x_batch, y_batch)`` NumPy arrays.

  Raises:
      ValueError: For mismatched lengths, a non-positive ``batch_size`` or a negative seed.

  Examples:
      >>> x = np.arange(10.0)[:, None]
      >>> y = np.arange(10)
      >>> [yb.tolist() for _, yb in iterate_batches(0, x, y, 4, epoch=1)]
      [[9, 1, 3, 8], [7, 6, 0, 4]]
  """
  if len(x) != len(y):
    raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}.")
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}.")
  if epoch < 0:
    raise ValueError(f"epoch must be non-negative, got {epoch}.")
  n = len(x)
  if shuffle:
    order = np.random.default_rng([*_seed_entropy(key_or_seed), epoch]).permutation(n)
  else:
    order = np.arange(n)
  stop = n - n % batch_size if drop_last else n
  for start in range(0, stop, batch_size):
    idx = order[start : start + batch_size]
    yield x[idx], y[idx]


def _finish(
  name: str,
  x_train: np.ndarray,
  y_train: np.ndarray,
  x_test: np.ndarray,
  y_test: np.ndarray,
  num_classes: int,
  *,
  noise: str | LabelNoise | None,
  seed: int,
  val_fraction: float,
  y_train_clean: np.ndarray | None = None,
) -> Dataset:
  """Adds label noise and a validation split (independent seed streams)."""
  noise = parse_label_noise(noise)
  _check_fraction("val_fraction", val_fraction)
  clean = y_train if y_train_clean is None else y_train_clean
  noisy = add_label_noise(y_train, num_classes, noise, [seed, _STREAM_NOISE])
  if noise.kind != "none":
    name = f"{name}[{noise}]"
  ds = Dataset(
    x_train=x_train,
    y_train=noisy.astype(np.int32),
    y_train_clean=clean.astype(np.int32),
    x_test=x_test,
    y_test=y_test.astype(np.int32),
    num_classes=num_classes,
    name=name,
  )
  return split_validation(ds, val_fraction, [seed, _STREAM_VAL])


# --------------------------------------------------------------------------------------
# MNIST-1D and digits
# --------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
  """Cache directory: ``$FSGLD_DATA_DIR`` if set, else ``~/.cache/fsgld_optax``."""
  env = os.environ.get("FSGLD_DATA_DIR")
  return Path(env).expanduser() if env else Path.home() / ".cache" / "fsgld_optax"


def _mnist1d_arrays(
  num_samples: int, data_seed: int, cache_dir: str | os.PathLike[str] | None, use_cache: bool
) -> dict[str, np.ndarray]:
  # Only the procedural generator is used: `mnist1d.data.make_dataset` builds the data from
  # templates with NumPy/SciPy and does no I/O (`get_dataset` would fetch a URL).
  from mnist1d.data import get_dataset_args, make_dataset
  from mnist1d.utils import ObjectView

  arg_dict = dict(vars(get_dataset_args()), num_samples=num_samples, seed=data_seed)
  args = ObjectView(arg_dict)
  spec = {k: v for k, v in arg_dict.items() if k != "url"}
  spec["mnist1d_version"] = importlib.metadata.version("mnist1d")
  digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
  path = Path(cache_dir or default_cache_dir()) / f"mnist1d_{digest}.npz"
  keys = ("x", "y", "x_test", "y_test")

  if use_cache and path.is_file():
    try:
      with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in keys}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
      pass  # Unreadable cache: regenerate and overwrite.

  # make_dataset seeds and draws from the global NumPy and `random` states; restore them.
  np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
  try:
    raw = make_dataset(args)
  finally:
    np.random.set_state(np_state)  # noqa: NPY002
    random.setstate(py_state)
  arrays = {
    "x": np.asarray(raw["x"], np.float32),
    "y": np.asarray(raw["y"], np.int32),
    "x_test": np.asarray(raw["x_test"], np.float32),
    "y_test": np.asarray(raw["y_test"], np.int32),
  }
  if use_cache:
    tmp = None
    try:  # Write to a temporary file, then rename: readers never see a partial file.
      path.parent.mkdir(parents=True, exist_ok=True)
      with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
        tmp = Path(f.name)
        np.savez(f, **arrays)
      os.replace(tmp, path)
    except OSError:  # The cache is an optimisation only.
      if tmp is not None:
        tmp.unlink(missing_ok=True)
  return arrays


def load_mnist1d(
  *,
  noise: str | LabelNoise | None = "none",
  seed: int = 0,
  val_fraction: float = 0.0,
  num_samples: int = 5000,
  data_seed: int = 42,
  cache_dir: str | os.PathLike[str] | None = None,
  use_cache: bool = True,
) -> Dataset:
  """MNIST-1D (Greydanus, 2020), generated locally, optionally with label noise.

  With the defaults this is the standard MNIST-1D setup: 4,000 training and 1,000 test signals
  of length 40, 10 classes, inputs shaped ``(N, 40, 1)`` for a 1-D CNN. The generator
  (``mnist1d.data.make_dataset`` with ``get_dataset_args()``) takes about two seconds for
  5,000 samples; its output is cached in ``cache_dir`` (default :func:`default_cache_dir`)
  under a name derived from the generator arguments and the ``mnist1d`` version, so later
  calls load it in milliseconds. The cache is an optimisation only: an unreadable or
  unwritable cache is ignored.

  Args:
      noise: Label noise for the training set (see :func:`parse_label_noise`).
      seed: Seed for the label noise and the validation split.
      val_fraction: Fraction of the training set held out for validation.
      num_samples: Total number of signals; 80% are used for training.
      data_seed: The generator's seed (42 is the ``mnist1d`` default).
      cache_dir: Cache directory.
      use_cache: Read and write the cache.

  Returns:
      A :class:`Dataset` named ``"mnist1d"``.
  """
  a = _mnist1d_arrays(num_samples, data_seed, cache_dir, use_cache)
  return _finish(
    "mnist1d",
    a["x"][..., None],
    a["y"],
    a["x_test"][..., None],
    a["y_test"],
    10,
    noise=noise,
    seed=seed,
    val_fraction=val_fraction,
  )


def load_digits(
  *,
  noise: str | LabelNoise | None = "none",
  seed: int = 0,
  test_fraction: float = 0.2,
  val_fraction: float = 0.0,
  as_images: bool = False,
) -> Dataset:
  """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes, bundled offline).

  Pixels are scaled from ``[0, 16]`` to ``[0, 1]``. The train/test split is stratified by
  class and fixed by ``seed``.

  Args:
      noise: Label noise for the training set (see :func:`parse_label_noise`).
      seed: Seed for the test split, the label noise and the validation split.
      test_fraction: Fraction of each class held out for testing.
      val_fraction: Fraction of the training set held out for validation.
      as_images: Inputs shaped ``(N, 8, 8, 1)`` instead of ``(N, 64)``.

  Returns:
      A :class:`Dataset` named ``"digits"``.
  """
  from sklearn.datasets import load_digits as sklearn_load_digits

  _check_fraction("test_fraction", test_fraction)
  images, targets = sklearn_load_digits(return_X_y=True)
  x = (np.asarray(images, np.float32) / 16.0).astype(np.float32)
  y = np.asarray(targets, np.int32)
  if as_images:
    x = x.reshape(-1, 8, 8, 1)
  train, test = _stratified_split(y, test_fraction, np.random.default_rng([seed, _STREAM_SPLIT]))
  return _finish(
    "digits",
    x[train],
    y[train],
    x[test],
    y[test],
    10,
    noise=noise,
    seed=seed,
    val_fraction=val_fraction,
  )


# --------------------------------------------------------------------------------------
# CIFAR-10N / CIFAR-100N
# --------------------------------------------------------------------------------------

# Normalisation constants of the paper's official code (torchvision `Normalize`). These are
# the widely used values; CIFAR-10's per-channel pixel std is closer to (0.247, 0.243, 0.261).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)

#: Label sets of ``CIFAR-10_human``: name -> field in the label file.
CIFAR10N_LABEL_SETS: Mapping[str, str] = {
  "clean": "clean_label",
  "aggre": "aggre_label",
  "worst": "worse_label",
  "random1": "random_label1",
  "random2": "random_label2",
  "random3": "random_label3",
}
#: Label sets of ``CIFAR-100_human``: name -> field in the label file.
CIFAR100N_LABEL_SETS: Mapping[str, str] = {
  "clean": "clean_label",
  "noisy100": "noisy_label",
  "noisy": "noisy_label",
}

_CIFAR = {
  "cifar10": {
    "folder": "cifar-10-batches-py",
    "train": [f"data_batch_{i}" for i in range(1, 6)],
    "test": ["test_batch"],
    "label_key": "labels",
    "num_classes": 10,
    "mean": CIFAR10_MEAN,
    "std": CIFAR10_STD,
    "label_file": "CIFAR-10_human",
    "label_sets": CIFAR10N_LABEL_SETS,
    "default_label_set": "aggre",
  },
  "cifar100": {
    "folder": "cifar-100-python",
    "train": ["train"],
    "test": ["test"],
    "label_key": "fine_labels",
    "num_classes": 100,
    "mean": CIFAR100_MEAN,
    "std": CIFAR100_STD,
    "label_file": "CIFAR-100_human",
    "label_sets": CIFAR100N_LABEL_SETS,
    "default_label_set": "noisy100",
  },
}

_PT_HINT = (
  "Convert the torch file once with:\n"
  "  python -c \"import numpy as np, torch; d = torch.load('{name}.pt', weights_only=False); "
  "np.savez('{name}.npz', **{{k: np.asarray(v) for k, v in d.items()}})\""
)


def _cifar_name(dataset: str) -> str:
  key = dataset.strip().lower().replace("-", "").replace("_", "")
  key = key.removesuffix("n")
  if key not in _CIFAR:
    raise ValueError(
      f"Unknown CIFAR dataset {dataset!r}; expected 'cifar10', 'cifar10n', "
      "'cifar100' or 'cifar100n'."
    )
  return key


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
  with open(path, "rb") as f:
    entry = pickle.load(f, encoding="bytes")
  entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
  if "data" not in entry or label_key not in entry:
    raise ValueError(f"{path} is not a CIFAR python batch (needs 'data' and '{label_key}').")
  data = np.asarray(entry["data"], np.uint8)
  if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
    raise ValueError(f"{path}: expected data of shape (N, 3072), got {data.shape}.")
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  labels = np.asarray(entry[label_key], np.int64).reshape(-1)
  if len(labels) != len(images):
    raise ValueError(f"{path}: {len(images)} images but {len(labels)} labels.")
  return images, labels


def load_cifar(
  root: str | os.PathLike[str], dataset: str = "cifar10"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Reads the CIFAR-10 or CIFAR-100 python batches.

  Args:
      root: The directory that contains ``cifar-10-batches-py`` (``data_batch_1`` ...
          ``data_batch_5``, ``test_batch``) or ``cifar-100-python`` (``train``, ``test``),
          or that directory itself.
      dataset: ``"cifar10"`` or ``"cifar100"`` (a trailing ``n`` is ignored).

  Returns:
      ``(x_train, y_train, x_test, y_test)``: uint8 NHWC images and int32 labels
      (CIFAR-100: the 100 fine labels), in file order.

  Raises:
      FileNotFoundError: If the batch files are missing.
      ValueError: For malformed batch files.
  """
  meta = _CIFAR[_cifar_name(dataset)]
  root = Path(root).expanduser()
  folder = root / meta["folder"] if (root / meta["folder"]).is_dir() else root
  files = [*meta["train"], *meta["test"]]
  missing = [f for f in files if not (folder / f).is_file()]
  if missing:
    raise FileNotFoundError(
      f"CIFAR files not found in {folder}: missing {', '.join(missing)}. Expected the "
      f"'{meta['folder']}' folder of the python version of the dataset."
    )

  def read(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    parts = [_read_cifar_batch(folder / n, meta["label_key"]) for n in names]
    return (
      np.concatenate([p[0] for p in parts]),
      np.concatenate([p[1] for p in parts]).astype(np.int32),
    )

  return (*read(meta["train"]), *read(meta["test"]))


def normalize_cifar(images: np.ndarray, dataset: str = "cifar10") -> np.ndarray:
  """Scales uint8 NHWC images to ``[0, 1]`` and normalises with the CIFAR mean and std.

  Args:
      images: uint8 images, shape ``(..., 3)``.
      dataset: ``"cifar10"`` or ``"cifar100"``, selecting the constants.

  Returns:
      float32 images ``(x / 255 - mean) / std``.
  """
  meta = _CIFAR[_cifar_name(dataset)]
  mean = np.asarray(meta["mean"], np.float32)
  std = np.asarray(meta["std"], np.float32)
  return ((np.asarray(images, np.float32) / 255.0 - mean) / std).astype(np.float32)


def read_cifar_n_labels(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """Reads a CIFAR-N label file saved without torch.

    The official ``CIFAR-10_human.pt`` / ``CIFAR-100_human.pt`` are torch pickles of a dict
    of arrays (CIFAR-10N: ``clean_label``, ``aggre_label``, ``worse_label``,
    ``random_label1`` .. ``random_label3``; CIFAR-100N: ``clean_label``, ``noisy_label``,
    plus coarse labels). Convert one once, where torch is installed, with::

        python -c "import numpy as np, torch; d = torch.load('CIFAR-10_human.pt', \\
            weights_only=False); np.savez('CIFAR-10_human.npz', \\
            **{k: np.asarray(v) for k, v in d.items()})"

    Supported forms:

    * ``.npz``: one array per field (as written above).
    * ``.npy``: a structured array with one named field per label set, or a dict saved with
      ``np.save`` (a pickle, so only load files you trust, like the CIFAR batches).
    * ``.csv``: a header row of field names, then one row per training image.

    Args:
        path: The label file.

    Returns:
        Field name -> int64 label array of shape ``(N,)``.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: For a ``.pt`` file or an unsupported layout.
    """
  path = Path(path).expanduser()
  suffix = path.suffix.lower()
  if suffix == ".pt":
    raise ValueError(
      f"{path} is a torch file, which is read without torch only after conversion. "
      + _PT_HINT.format(name=path.stem)
    )
  if not path.is_file():
    raise FileNotFoundError(f"CIFAR-N label file not found: {path}")
  fields: dict[str, Any]
  if suffix == ".npz":
    with np.load(path, allow_pickle=False) as f:
      fields = {k: f[k] for k in f.files}
  elif suffix == ".npy":
    arr = np.load(path, allow_pickle=True)
    if arr.dtype.names:
      fields = {k: arr[k] for k in arr.dtype.names}
    elif arr.dtype == object and arr.shape == () and isinstance(arr.item(), dict):
      fields = dict(arr.item())
    else:
      raise ValueError(f"{path}: expected a structured array or a saved dict of labels.")
  elif suffix == ".csv":
    with open(path, newline="") as f:
      rows = list(csv.reader(f))
    if not rows:
      raise ValueError(f"{path} is empty.")
    header = [h.strip() for h in rows[0]]
    try:
      table = np.asarray([[int(v) for v in row] for row in rows[1:] if row], np.int64)
    except ValueError:
      raise ValueError(f"{path}: expected a header row, then integer rows.") from None
    table = table.reshape(-1, len(header))
    fields = {name: table[:, i] for i, name in enumerate(header)}
  else:
    raise ValueError(f"Unsupported CIFAR-N label file {path}: use .npz, .npy or .csv.")
  out = {}
  for name, values in fields.items():
    arr = np.asarray(values)
    if arr.dtype.kind in "iu" or (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
      out[str(name)] = arr.astype(np.int64).reshape(-1)
  return out


def _find_label_file(root: Path, stem: str) -> Path:
  searched = []
  for folder in (root, root / "CIFAR"):
    for suffix in (".npz", ".npy", ".csv"):
      candidate = folder / f"{stem}{suffix}"
      if candidate.is_file():
        return candidate
      searched.append(str(candidate))
  for folder in (root, root / "CIFAR"):
    if (folder / f"{stem}.pt").is_file():
      raise FileNotFoundError(
        f"Found {folder / (stem + '.pt')} but no .npz/.npy/.csv version of it. "
        + _PT_HINT.format(name=stem)
      )
  raise FileNotFoundError(
    f"CIFAR-N label file not found; looked for {', '.join(searched)}. Pass label_file=."
  )


def load_cifar_n(
  root: str | os.PathLike[str],
  *,
  dataset: str = "cifar10n",
  label_set: str | None = None,
  label_file: str | os.PathLike[str] | None = None,
  seed: int = 0,
  val_fraction: float = 0.0,
  normalize: bool = True,
) -> Dataset:
  """CIFAR-10N / CIFAR-100N: CIFAR images with human-annotated noisy training labels.

  Reads files the user already has (nothing is downloaded): the python batches under
  ``root`` (see :func:`load_cifar`) and the CIFAR-N label file (see
  :func:`read_cifar_n_labels`), by default ``CIFAR-10_human.{npz,npy,csv}`` or
  ``CIFAR-100_human.{npz,npy,csv}`` in ``root`` or ``root/CIFAR``. The label file's
  ``clean_label`` field must equal the CIFAR training labels, which confirms that the
  file belongs to this dataset and is in the same order. Test labels are the clean
  CIFAR labels.

  Label sets (``label_set``), with the paper's choice first:

  * CIFAR-10N: ``aggre`` (``aggre_label``, ~9% noise), ``worst`` (``worse_label``,
    ~40%), ``random1`` .. ``random3`` (``random_label1..3``, ~17%), ``clean``.
  * CIFAR-100N: ``noisy100`` or ``noisy`` (``noisy_label``, ~40%), ``clean``.

  A raw field name of the label file is accepted too.

  Args:
      root: Directory holding the CIFAR folder (and, by default, the label file).
      dataset: ``"cifar10n"`` or ``"cifar100n"``.
      label_set: Training labels to use; default ``aggre`` / ``noisy100``.
      label_file: Path of the label file, overriding the default search. Not needed for
          ``label_set="clean"``.
      seed: Seed for the validation split.
      val_fraction: Fraction of the training set held out for validation.
      normalize: Return float32 images normalised by :func:`normalize_cifar`; ``False``
          keeps uint8 images.

  Returns:
      A :class:`Dataset` with NHWC images, named e.g. ``"cifar10n[aggre]"``.

  Raises:
      FileNotFoundError: If the CIFAR batches or the label file are missing.
      ValueError: For an unknown label set, or a label file whose length, range or clean
          labels do not match the CIFAR training set.
  """
  name = _cifar_name(dataset)
  meta = _CIFAR[name]
  num_classes: int = meta["num_classes"]
  sets: Mapping[str, str] = meta["label_sets"]
  label_set = meta["default_label_set"] if label_set is None else label_set
  x_train, y_clean, x_test, y_test = load_cifar(root, name)

  if label_set == "clean" and label_file is None:
    y_train = y_clean
  else:
    path = (
      Path(label_file)
      if label_file is not None
      else _find_label_file(Path(root).expanduser(), meta["label_file"])
    )
    fields = read_cifar_n_labels(path)
    field = sets.get(label_set, label_set)
    if field not in fields:
      raise ValueError(
        f"Unknown label set {label_set!r} for {name}n: choose one of "
        f"{', '.join(sets)} (fields in {path.name}: {', '.join(sorted(fields))})."
      )
    if "clean_label" not in fields:
      raise ValueError(f"{path} has no 'clean_label' field to check it against CIFAR.")
    n = len(y_clean)
    for key in {field, "clean_label"}:
      if len(fields[key]) != n:
        raise ValueError(
          f"{path}: field {key!r} has {len(fields[key])} labels but the CIFAR "
          f"training set has {n} images."
        )
      if fields[key].min() < 0 or fields[key].max() >= num_classes:
        raise ValueError(f"{path}: field {key!r} has labels outside [0, {num_classes}).")
    mismatch = np.flatnonzero(fields["clean_label"] != y_clean)
    if mismatch.size:
      raise ValueError(
        f"{path}: 'clean_label' disagrees with the CIFAR training labels at "
        f"{mismatch.size} of {n} positions (first at index {mismatch[0]}); the label "
        f"file does not belong to this {name} copy or is in a different order."
      )
    y_train = fields[field].astype(np.int32)

  if normalize:
    x_train, x_test = normalize_cifar(x_train, name), normalize_cifar(x_test, name)
  ds = Dataset(
    x_train=x_train,
    y_train=y_train.astype(np.int32),
    y_train_clean=y_clean.astype(np.int32),
    x_test=x_test,
    y_test=y_test.astype(np.int32),
    num_classes=num_classes,
    name=f"{name}n[{label_set}]",
  )
  _check_fraction("val_fraction", val_fraction)
  return split_validation(ds, val_fraction, [seed, _STREAM_VAL])


# --------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------


def _as_key(key: int | jax.Array) -> jax.Array:
  if isinstance(key, int):
    return jax.random.key(key)
  key = jnp.asarray(key)
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return key
  if key.shape == ():
    return jax.random.key(key)
  return jax.random.wrap_key_data(key)


def augment(
  key: int | jax.Array,
  images: jax.Array | np.ndarray,
  *,
  padding: int = 4,
  flip: bool = True,
) -> jax.Array:
  """Random crop with zero padding and random horizontal flip, per example.

  The standard CIFAR augmentation used by the paper (torchvision
  ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``): each image is padded with
  ``padding`` zeros on every side, a window of the original size is cut at a uniformly
  random offset in ``[0, 2 * padding]^2``, and the result is mirrored left-right with
  probability 1/2. Pure and jit-able; the output is a function of ``key`` only.

  Note that the padding value is 0 in the units of ``images``: on normalised images that
  is the dataset mean colour, whereas torchvision pads the raw image with black.

  Args:
      key: A JAX PRNG key (typed or raw) or an int seed.
      images: Images ``(N, H, W, C)``.
      padding: Zero padding on each side; 0 disables cropping.
      flip: Enable random horizontal flips.

  Returns:
      Augmented images, same shape and dtype as ``images``.

  Examples:
      >>> x = jnp.ones((2, 32, 32, 3))
      >>> augment(jax.random.key(0), x).shape
      (2, 32, 32, 3)
  """
  images = jnp.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"Expected images of shape (N, H, W, C), got {images.shape}.")
  if padding < 0:
    raise ValueError(f"padding must be non-negative, got {padding}.")
  n, h, w, c = images.shape
  key_crop, key_flip = jax.random.split(_as_key(key))
  out = images
  if padding:
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(key_crop, (n, 2), 0, 2 * padding + 1)

    def crop(image: jax.Array, offset: jax.Array) -> jax.Array:
      return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))

    out = jax.vmap(crop)(padded, offsets)
  if flip:
    mirror = jax.random.bernoulli(key_flip, 0.5, (n,))
    out = jnp.where(mirror[:, None, None, None], out[:, :, ::-1, :], out)
  return out
