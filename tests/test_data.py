"""Tests for benchmarks/data.py: label noise, offline loaders, CIFAR-N files, augmentation."""

import doctest
import pickle
import random
import socket

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import data
from benchmarks.data import (
  LabelNoise,
  add_label_noise,
  augment,
  iterate_batches,
  load_cifar,
  load_cifar_n,
  load_digits,
  load_mnist1d,
  parse_label_noise,
  read_cifar_n_labels,
  split_validation,
)

# --------------------------------------------------------------------------------------
# Label noise
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  ("spec", "expected"),
  [
    ("none", LabelNoise("none", 0.0)),
    (None, LabelNoise("none", 0.0)),
    ("symmetric:0.4", LabelNoise("symmetric", 0.4)),
    (" Pairflip : 0.3 ", LabelNoise("pairflip", 0.3)),
    ("symmetric:0", LabelNoise("symmetric", 0.0)),
    (LabelNoise("pairflip", 0.1), LabelNoise("pairflip", 0.1)),
  ],
)
def test_parse_label_noise(spec, expected):
  assert parse_label_noise(spec) == expected


@pytest.mark.parametrize(
  ("spec", "message"),
  [
    ("uniform:0.2", "Unknown label noise kind 'uniform'"),
    ("", "Unknown label noise kind ''"),
    ("symmetric", "needs a rate"),
    ("pairflip:", "needs a rate"),
    ("symmetric:abc", "Malformed"),
    ("symmetric:1.0", r"in \[0, 1\)"),
    ("symmetric:-0.1", r"in \[0, 1\)"),
    ("pairflip:nan", r"in \[0, 1\)"),
    ("none:0.3", "takes no rate"),
    (0.3, "must be a string"),
  ],
)
def test_parse_label_noise_errors(spec, message):
  with pytest.raises(ValueError, match=message):
    parse_label_noise(spec)


def test_label_noise_validates_fields():
  with pytest.raises(ValueError, match="Unknown"):
    LabelNoise("flip", 0.1)  # type: ignore[arg-type]
  with pytest.raises(ValueError, match=r"\[0, 1\)"):
    LabelNoise("symmetric", 1.5)
  assert str(LabelNoise("symmetric", 0.4)) == "symmetric:0.4"
  assert str(parse_label_noise(str(LabelNoise("pairflip", 0.25)))) == "pairflip:0.25"


# N = 100,000 labels: the realised rate is Binomial(N, r) / N with standard deviation
# sqrt(r (1 - r) / N) <= 0.0016, so the +-0.01 tolerance is more than 6 standard deviations.
_N_LARGE = 100_000


@pytest.mark.parametrize("kind", ["symmetric", "pairflip"])
@pytest.mark.parametrize("rate", [0.2, 0.4, 0.8])
def test_realised_noise_rate(kind, rate):
  labels = np.random.default_rng(0).integers(0, 10, _N_LARGE)
  noisy = add_label_noise(labels, 10, LabelNoise(kind, rate), seed=1)
  assert noisy.dtype == labels.dtype and noisy.shape == labels.shape
  assert abs(np.mean(noisy != labels) - rate) < 0.01


def test_symmetric_noise_is_uniform_over_other_classes():
  labels = np.full(_N_LARGE, 3)
  noisy = add_label_noise(labels, 10, "symmetric:0.45", seed=2)
  counts = np.bincount(noisy, minlength=10)
  # Each of the 9 other classes expects N * 0.45 / 9 = 5,000 labels with a binomial
  # standard deviation of about 70; allow 5 standard deviations.
  others = np.delete(counts, 3)
  np.testing.assert_allclose(others, _N_LARGE * 0.45 / 9, atol=5 * 70)


def test_pairflip_moves_to_next_class_only():
  labels = np.arange(_N_LARGE) % 7
  noisy = add_label_noise(labels, 7, "pairflip:0.3", seed=3)
  changed = noisy != labels
  np.testing.assert_array_equal(noisy[changed], (labels[changed] + 1) % 7)
  assert np.any(noisy[labels == 6] == 0)  # The last class wraps around.


def test_label_noise_reproducible_and_pure():
  labels = np.random.default_rng(0).integers(0, 5, 1000)
  before = labels.copy()
  a = add_label_noise(labels, 5, "symmetric:0.5", seed=7)
  b = add_label_noise(labels, 5, "symmetric:0.5", seed=7)
  c = add_label_noise(labels, 5, "symmetric:0.5", seed=8)
  np.testing.assert_array_equal(a, b)
  assert np.any(a != c)
  np.testing.assert_array_equal(labels, before)
  np.testing.assert_array_equal(add_label_noise(labels, 5, "none", seed=7), labels)


def test_label_noise_errors():
  with pytest.raises(ValueError, match=r"\[0, 3\)"):
    add_label_noise(np.array([0, 3]), 3, "symmetric:0.1", seed=0)
  with pytest.raises(ValueError, match="integers"):
    add_label_noise(np.array([0.0, 1.0]), 3, "symmetric:0.1", seed=0)
  with pytest.raises(ValueError, match="at least 2 classes"):
    add_label_noise(np.zeros(4, int), 1, "symmetric:0.1", seed=0)


# --------------------------------------------------------------------------------------
# Digits and validation splits
# --------------------------------------------------------------------------------------


def test_load_digits():
  ds = load_digits(seed=0)
  assert ds.num_classes == 10
  assert ds.x_train.shape[1:] == (64,) and ds.x_train.dtype == np.float32
  assert len(ds.x_train) + len(ds.x_test) == 1797
  assert abs(len(ds.x_test) - 0.2 * 1797) <= 10  # Rounded per class.
  assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
  assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
  assert ds.noise_rate == 0.0 and ds.x_val is None
  # Stratified: every class is in both splits in proportion.
  assert np.all(np.bincount(ds.y_test, minlength=10) >= 30)
  assert load_digits(as_images=True).x_train.shape[1:] == (8, 8, 1)


def test_load_digits_split_and_noise_by_seed():
  a, b, c = load_digits(seed=1), load_digits(seed=1), load_digits(seed=2)
  np.testing.assert_array_equal(a.x_test, b.x_test)
  assert a.x_test.shape != c.x_test.shape or np.any(a.x_test != c.x_test)
  noisy = load_digits(seed=1, noise="symmetric:0.4")
  # Noise touches training labels only; the split and the clean labels are unchanged.
  np.testing.assert_array_equal(noisy.x_test, a.x_test)
  np.testing.assert_array_equal(noisy.y_test, a.y_test)
  np.testing.assert_array_equal(noisy.y_train_clean, a.y_train)
  # 1,438 training labels: the realised rate has a standard deviation of 0.013.
  assert abs(noisy.noise_rate - 0.4) < 0.05
  assert noisy.name == "digits[symmetric:0.4]"


def test_validation_split():
  full = load_digits(seed=3, noise="pairflip:0.3")
  ds = load_digits(seed=3, noise="pairflip:0.3", val_fraction=0.25)
  assert ds.x_val is not None and ds.y_val is not None and ds.y_val_clean is not None
  assert len(ds.x_train) + len(ds.x_val) == len(full.x_train)
  assert len(ds.x_val) == round(0.25 * len(full.x_train))
  # The two parts partition the training set, labels travel with their inputs, and the
  # validation labels carry the same noise as the training labels.
  rows = {row.tobytes(): i for i, row in enumerate(full.x_train)}
  idx_train = np.array([rows[r.tobytes()] for r in ds.x_train])
  idx_val = np.array([rows[r.tobytes()] for r in ds.x_val])
  assert len(np.union1d(idx_train, idx_val)) == len(full.x_train)
  np.testing.assert_array_equal(ds.y_train, full.y_train[idx_train])
  np.testing.assert_array_equal(ds.y_val, full.y_train[idx_val])
  np.testing.assert_array_equal(ds.y_val_clean, full.y_train_clean[idx_val])
  np.testing.assert_array_equal(ds.x_test, full.x_test)
  with pytest.raises(ValueError, match="already has"):
    split_validation(ds, 0.1, seed=0)
  with pytest.raises(ValueError, match=r"\[0, 1\)"):
    load_digits(val_fraction=1.0)


# --------------------------------------------------------------------------------------
# MNIST-1D
# --------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError("network access attempted")

  monkeypatch.setattr(socket.socket, "connect", refuse)
  monkeypatch.setattr(socket, "create_connection", refuse)


def test_mnist1d_generates_offline_and_caches(tmp_path, monkeypatch, no_network):
  np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
  ds = load_mnist1d(num_samples=500, cache_dir=tmp_path)
  assert ds.x_train.shape == (400, 40, 1) and ds.x_test.shape == (100, 40, 1)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  assert set(np.unique(ds.y_train)) == set(range(10)) and ds.num_classes == 10
  # The generator's use of the global NumPy and `random` states is undone.
  assert random.getstate() == py_state
  np.testing.assert_array_equal(np.random.get_state()[1], np_state[1])  # noqa: NPY002
  assert np.random.get_state()[2] == np_state[2]  # noqa: NPY002
  assert len(list(tmp_path.glob("mnist1d_*.npz"))) == 1

  # The second call reads the cache without running the generator.
  import mnist1d.data

  def fail(*args, **kwargs):
    raise AssertionError("generator called despite the cache")

  monkeypatch.setattr(mnist1d.data, "make_dataset", fail)
  again = load_mnist1d(num_samples=500, cache_dir=tmp_path)
  np.testing.assert_array_equal(again.x_train, ds.x_train)
  np.testing.assert_array_equal(again.y_test, ds.y_test)


def test_mnist1d_cache_is_only_an_optimisation(tmp_path):
  ds = load_mnist1d(num_samples=200, cache_dir=tmp_path)
  (cache,) = tmp_path.glob("mnist1d_*.npz")
  cache.write_bytes(b"not a zip file")
  again = load_mnist1d(num_samples=200, cache_dir=tmp_path)
  np.testing.assert_array_equal(again.x_train, ds.x_train)
  blocked = tmp_path / "a_file"
  blocked.write_text("")  # A cache "directory" that cannot be created.
  uncached = load_mnist1d(num_samples=200, cache_dir=blocked / "sub")
  np.testing.assert_array_equal(uncached.x_train, ds.x_train)
  fresh = load_mnist1d(num_samples=200, cache_dir=tmp_path / "unused", use_cache=False)
  np.testing.assert_array_equal(fresh.x_train, ds.x_train)
  assert not (tmp_path / "unused").exists()


def test_mnist1d_standard_dataset_with_noise(tmp_path, monkeypatch):
  monkeypatch.setenv("FSGLD_DATA_DIR", str(tmp_path))
  assert data.default_cache_dir() == tmp_path
  ds = load_mnist1d(noise="symmetric:0.3", seed=4, val_fraction=0.1)
  assert len(list(tmp_path.glob("mnist1d_*.npz"))) == 1
  assert ds.x_test.shape == (1000, 40, 1)
  assert len(ds.x_train) + len(ds.x_val) == 4000
  # 3,600 labels: the realised rate has a standard deviation of 0.008.
  assert abs(ds.noise_rate - 0.3) < 0.04
  np.testing.assert_array_equal(ds.y_train_clean, load_mnist1d(seed=4, val_fraction=0.1).y_train)


# --------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------


def test_iterate_batches():
  x = np.arange(103, dtype=np.float32)[:, None]
  y = np.arange(103)
  batches = list(iterate_batches(5, x, y, 10, epoch=2))
  assert len(batches) == 10 and all(len(yb) == 10 for _, yb in batches)
  for xb, yb in batches:
    np.testing.assert_array_equal(xb[:, 0], yb)
  order = np.concatenate([yb for _, yb in batches])
  assert len(np.unique(order)) == 100  # Without replacement.
  again = np.concatenate([yb for _, yb in iterate_batches(5, x, y, 10, epoch=2)])
  np.testing.assert_array_equal(again, order)
  other_epoch = np.concatenate([yb for _, yb in iterate_batches(5, x, y, 10, epoch=3)])
  assert np.any(other_epoch != order)
  other_seed = np.concatenate([yb for _, yb in iterate_batches(6, x, y, 10, epoch=2)])
  assert np.any(other_seed != order)
  full = np.concatenate([b[1] for b in iterate_batches(5, x, y, 10, drop_last=False)])
  np.testing.assert_array_equal(np.sort(full), y)
  ordered = np.concatenate([b[1] for b in iterate_batches(5, x, y, 10, shuffle=False)])
  np.testing.assert_array_equal(ordered, y[:100])


def test_iterate_batches_accepts_jax_keys():
  x, y = np.zeros((20, 1)), np.arange(20)
  first = [yb for _, yb in iterate_batches(jax.random.key(3), x, y, 5)]
  second = [yb for _, yb in iterate_batches(jax.random.key(3), x, y, 5)]
  other = [yb for _, yb in iterate_batches(jax.random.key(4), x, y, 5)]
  np.testing.assert_array_equal(np.stack(first), np.stack(second))
  assert np.any(np.stack(first) != np.stack(other))
  raw = jax.random.key_data(jax.random.key(3))
  np.testing.assert_array_equal(
    np.stack(first), np.stack([yb for _, yb in iterate_batches(raw, x, y, 5)])
  )


def test_iterate_batches_errors():
  x, y = np.zeros((4, 1)), np.arange(4)
  with pytest.raises(ValueError, match="same length"):
    next(iterate_batches(0, x, y[:3], 2))
  with pytest.raises(ValueError, match="batch_size"):
    next(iterate_batches(0, x, y, 0))
  with pytest.raises(ValueError, match="non-negative"):
    next(iterate_batches(-1, x, y, 2))
  assert list(iterate_batches(0, x, y, 8)) == []  # Fewer examples than one batch.


# --------------------------------------------------------------------------------------
# CIFAR-N
# --------------------------------------------------------------------------------------


def _write_pickle(path, entry):
  with open(path, "wb") as f:
    pickle.dump(entry, f)


def _fake_cifar(root, *, num_classes, n_train, n_test, seed=0):
  """Writes CIFAR python batches with random images; returns (train, test) (data, labels)."""
  rng = np.random.default_rng(seed)
  data_train = rng.integers(0, 256, (n_train, 3072), dtype=np.uint8)
  data_test = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
  y_train = rng.integers(0, num_classes, n_train)
  y_test = rng.integers(0, num_classes, n_test)
  if num_classes == 10:
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    for i, part in enumerate(np.array_split(np.arange(n_train), 5)):
      entry = {b"data": data_train[part], b"labels": y_train[part].tolist(), b"batch_label": b"x"}
      _write_pickle(folder / f"data_batch_{i + 1}", entry)
    _write_pickle(folder / "test_batch", {b"data": data_test, b"labels": y_test.tolist()})
  else:
    folder = root / "cifar-100-python"
    folder.mkdir()
    for name, d, y in (("train", data_train, y_train), ("test", data_test, y_test)):
      entry = {b"data": d, b"fine_labels": y.tolist(), b"coarse_labels": (y // 5).tolist()}
      _write_pickle(folder / name, entry)
  return (data_train, y_train), (data_test, y_test)


def _cifar10n_fields(clean, seed=1):
  rng = np.random.default_rng(seed)
  fields = {"clean_label": clean}
  for name in ("aggre_label", "worse_label", "random_label1", "random_label2", "random_label3"):
    fields[name] = rng.integers(0, 10, len(clean))
  return fields


def _save_labels(path, fields):
  if path.suffix == ".npz":
    np.savez(path, **fields)
  elif path.suffix == ".csv":
    names = list(fields)
    rows = np.stack([fields[k] for k in names], axis=1)
    lines = [",".join(names)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
  elif path.name.endswith("dict.npy"):
    np.save(path, fields, allow_pickle=True)
  else:  # Structured .npy
    names = list(fields)
    arr = np.zeros(len(fields[names[0]]), dtype=[(k, np.int64) for k in names])
    for k in names:
      arr[k] = fields[k]
    np.save(path, arr)


@pytest.fixture
def cifar10(tmp_path):
  train, test = _fake_cifar(tmp_path, num_classes=10, n_train=30, n_test=12)
  fields = _cifar10n_fields(train[1])
  np.savez(tmp_path / "CIFAR-10_human.npz", **fields)
  return tmp_path, train, test, fields


def test_load_cifar_layout(cifar10):
  root, (data_train, y_train), (_, y_test), _ = cifar10
  x_train, labels, x_test, labels_test = load_cifar(root, "cifar10")
  assert x_train.shape == (30, 32, 32, 3) and x_train.dtype == np.uint8
  assert x_test.shape == (12, 32, 32, 3)
  # CIFAR rows are channel-major: red plane, green plane, blue plane, each row by row.
  n, i, j, c = 7, 5, 20, 2
  assert x_train[n, i, j, c] == data_train[n, c * 1024 + i * 32 + j]
  np.testing.assert_array_equal(labels, y_train)
  np.testing.assert_array_equal(labels_test, y_test)
  # The batch folder itself works as root too.
  np.testing.assert_array_equal(load_cifar(root / "cifar-10-batches-py")[0], x_train)


@pytest.mark.parametrize(
  ("label_set", "field"),
  [
    ("aggre", "aggre_label"),
    ("worst", "worse_label"),
    ("random1", "random_label1"),
    ("random2", "random_label2"),
    ("random3", "random_label3"),
    ("clean", "clean_label"),
    ("worse_label", "worse_label"),
  ],
)
def test_cifar10n_label_sets(cifar10, label_set, field):
  root, train, _, fields = cifar10
  ds = load_cifar_n(root, dataset="cifar10n", label_set=label_set)
  np.testing.assert_array_equal(ds.y_train, fields[field])
  np.testing.assert_array_equal(ds.y_train_clean, train[1])
  assert ds.num_classes == 10 and ds.name == f"cifar10n[{label_set}]"


def test_cifar10n_images_normalised(cifar10):
  root, (data_train, _), (_, y_test), _ = cifar10
  ds = load_cifar_n(root)  # Defaults: CIFAR-10N, aggregate labels.
  assert ds.name == "cifar10n[aggre]"
  assert ds.x_train.shape == (30, 32, 32, 3) and ds.x_train.dtype == np.float32
  n, i, j, c = 3, 31, 0, 1
  expected = (data_train[n, c * 1024 + i * 32 + j] / 255.0 - data.CIFAR10_MEAN[c]) / (
    data.CIFAR10_STD[c]
  )
  np.testing.assert_allclose(ds.x_train[n, i, j, c], expected, rtol=1e-6)
  np.testing.assert_array_equal(ds.y_test, y_test)
  raw = load_cifar_n(root, normalize=False)
  assert raw.x_train.dtype == np.uint8
  split = load_cifar_n(root, val_fraction=0.2, seed=1)
  assert split.x_val is not None and len(split.x_train) + len(split.x_val) == 30


@pytest.mark.parametrize("filename", ["labels.npz", "labels.csv", "labels.npy", "labels_dict.npy"])
def test_cifar_n_label_file_formats(cifar10, filename):
  root, _, _, fields = cifar10
  path = root / filename
  _save_labels(path, fields)
  read = read_cifar_n_labels(path)
  assert set(read) == set(fields)
  for k in fields:
    np.testing.assert_array_equal(read[k], fields[k])
  ds = load_cifar_n(root, label_set="random2", label_file=path)
  np.testing.assert_array_equal(ds.y_train, fields["random_label2"])


def test_cifar_n_clean_label_mismatch(cifar10):
  root, (_, y_train), _, fields = cifar10
  wrong = dict(fields, clean_label=(y_train + 1) % 10)
  _save_labels(root / "CIFAR-10_human.npz", wrong)
  with pytest.raises(ValueError, match="disagrees with the CIFAR training labels at 30 of 30"):
    load_cifar_n(root)
  short = {k: v[:-1] for k, v in fields.items()}
  _save_labels(root / "CIFAR-10_human.npz", short)
  with pytest.raises(ValueError, match="has 29 labels but the CIFAR training set has 30"):
    load_cifar_n(root)
  no_clean = {k: v for k, v in fields.items() if k != "clean_label"}
  _save_labels(root / "CIFAR-10_human.npz", no_clean)
  with pytest.raises(ValueError, match="no 'clean_label'"):
    load_cifar_n(root)


def test_cifar_n_errors(cifar10, tmp_path_factory):
  root, _, _, _ = cifar10
  with pytest.raises(ValueError, match=r"Unknown label set 'noisy100'.*aggre, worst"):
    load_cifar_n(root, label_set="noisy100")
  with pytest.raises(ValueError, match="Unknown CIFAR dataset"):
    load_cifar_n(root, dataset="svhn")
  (root / "CIFAR-10_human.npz").unlink()
  (root / "CIFAR-10_human.pt").write_bytes(b"")
  with pytest.raises(FileNotFoundError, match=r"torch.load\('CIFAR-10_human.pt'"):
    load_cifar_n(root)
  with pytest.raises(ValueError, match=r"np\.savez"):
    read_cifar_n_labels(root / "CIFAR-10_human.pt")
  (root / "CIFAR-10_human.pt").unlink()
  with pytest.raises(FileNotFoundError, match="label file not found"):
    load_cifar_n(root)
  assert load_cifar_n(root, label_set="clean").noise_rate == 0.0  # Needs no label file.
  with pytest.raises(FileNotFoundError, match="data_batch_1"):
    load_cifar_n(tmp_path_factory.mktemp("empty"))


def test_cifar100n(tmp_path):
  (_, y_train), (_, y_test) = _fake_cifar(tmp_path, num_classes=100, n_train=24, n_test=8)
  noisy = np.random.default_rng(5).integers(0, 100, 24)
  (tmp_path / "CIFAR").mkdir()  # The paper's layout: data_root/CIFAR/CIFAR-100_human.*
  _save_labels(
    tmp_path / "CIFAR" / "CIFAR-100_human.csv",
    {"clean_label": y_train, "noisy_label": noisy, "noisy_coarse_label": noisy // 5},
  )
  ds = load_cifar_n(tmp_path, dataset="cifar100n")
  assert ds.name == "cifar100n[noisy100]" and ds.num_classes == 100
  np.testing.assert_array_equal(ds.y_train, noisy)
  np.testing.assert_array_equal(ds.y_train_clean, y_train)
  np.testing.assert_array_equal(ds.y_test, y_test)
  raw = load_cifar(tmp_path, "cifar100")[0]
  mean, std = np.array(data.CIFAR100_MEAN), np.array(data.CIFAR100_STD)
  np.testing.assert_allclose(ds.x_train, (raw / 255.0 - mean) / std, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(load_cifar_n(tmp_path, dataset="CIFAR-100N").y_train, noisy)
  with pytest.raises(ValueError, match="noisy100"):
    load_cifar_n(tmp_path, dataset="cifar100n", label_set="aggre")


# --------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------


def _random_images(n=24, h=32, w=32, c=3, seed=0):
  # Nonzero values, so a zero pixel in the output can only come from the padding.
  return np.random.default_rng(seed).uniform(0.5, 1.5, (n, h, w, c)).astype(np.float32)


def _match(out, image, padding):
  """Returns (dy, dx, flipped) such that out is that window of the padded image, or None."""
  h, w, _ = image.shape
  padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  for dy in range(2 * padding + 1):
    for dx in range(2 * padding + 1):
      window = padded[dy : dy + h, dx : dx + w]
      if np.array_equal(out, window):
        return dy, dx, False
      if np.array_equal(out, window[:, ::-1]):
        return dy, dx, True
  return None


_augment = jax.jit(augment, static_argnames=("padding", "flip"))


def test_augment_is_a_shifted_zero_padded_window_maybe_mirrored():
  images = _random_images()
  out = np.asarray(_augment(jax.random.key(0), images))
  assert out.shape == images.shape and out.dtype == images.dtype
  matches = [_match(o, im, 4) for o, im in zip(out, images, strict=True)]
  assert all(m is not None for m in matches)
  # Offsets and flips are drawn per example (24 examples: all equal has probability ~0).
  assert len({m[:2] for m in matches}) > 1
  assert {m[2] for m in matches} == {False, True}
  # Offsets other than (4, 4) shift zeros in from the border.
  shifted = [k for k, m in enumerate(matches) if m[:2] != (4, 4)]
  assert shifted and all(np.any(out[k] == 0) for k in shifted)


def test_augment_flip_is_exact_mirror():
  images = _random_images()
  out = np.asarray(_augment(jax.random.key(1), images, padding=0))
  mirrored = [np.array_equal(o, im[:, ::-1]) for o, im in zip(out, images, strict=True)]
  kept = [np.array_equal(o, im) for o, im in zip(out, images, strict=True)]
  assert all(m or k for m, k in zip(mirrored, kept, strict=True))
  assert any(mirrored) and any(kept)


def test_augment_crop_only():
  images = _random_images(n=16)
  out = np.asarray(_augment(jax.random.key(2), images, flip=False))
  matches = [_match(o, im, 4) for o, im in zip(out, images, strict=True)]
  assert all(m is not None and not m[2] for m in matches)
  np.testing.assert_array_equal(_augment(jax.random.key(2), images, padding=0, flip=False), images)


def test_augment_is_deterministic_given_the_key():
  images = _random_images(n=8)
  a = _augment(jax.random.key(3), images)
  np.testing.assert_array_equal(a, _augment(jax.random.key(3), images))
  assert not np.array_equal(a, _augment(jax.random.key(4), images))
  np.testing.assert_array_equal(a, augment(jax.random.key(3), images))  # Eager = jit.
  np.testing.assert_array_equal(augment(3, images), a)  # An int seed means key(seed).


@pytest.mark.parametrize("dtype", [jnp.uint8, jnp.bfloat16])
def test_augment_keeps_dtype(dtype):
  images = jnp.ones((2, 8, 8, 3), dtype)
  out = augment(jax.random.key(0), images, padding=2)
  assert out.dtype == dtype and out.shape == images.shape


def test_augment_errors():
  with pytest.raises(ValueError, match="N, H, W, C"):
    augment(jax.random.key(0), jnp.ones((8, 8, 3)))
  with pytest.raises(ValueError, match="padding"):
    augment(jax.random.key(0), jnp.ones((1, 8, 8, 3)), padding=-1)


def test_docstring_examples():
  result = doctest.testmod(
    data, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS, verbose=False
  )
  assert result.attempted > 0
  assert result.failed == 0
