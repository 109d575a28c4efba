"""fsgld_optax.bayes metrics against NumPy and scikit-learn references, eagerly and under jit."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from sklearn import metrics as skm

from fsgld_optax import bayes


def random_problem(seed: int, n: int = 500, k: int = 5, concentration: float = 0.3):
  """Dirichlet probabilities (often confident) and labels that agree with them ~70%."""
  rng = np.random.default_rng(seed)
  probs = rng.dirichlet(np.full(k, concentration), size=n).astype(np.float32)
  probs /= probs.sum(axis=1, keepdims=True)
  labels = np.where(rng.random(n) < 0.7, probs.argmax(axis=1), rng.integers(0, k, n))
  return probs, labels.astype(np.int32)


def ece_reference(probs: np.ndarray, labels: np.ndarray, num_bins: int) -> float:
  """Guo et al.'s loop in float64: bins (lower, upper] with edges np.linspace(0, 1, B + 1)."""
  confidence = probs.max(axis=1).astype(np.float64)
  correct = probs.argmax(axis=1) == labels
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  total = 0.0
  for b in range(num_bins):
    lower = -np.inf if b == 0 else edges[b]
    in_bin = (confidence > lower) & (confidence <= edges[b + 1])
    if in_bin.any():
      gap = correct[in_bin].mean() - confidence[in_bin].mean()
      total += in_bin.mean() * abs(gap)
  return total


def nll_reference(probs: np.ndarray, labels: np.ndarray) -> float:
  return float(-np.mean(np.log(probs[np.arange(len(labels)), labels].astype(np.float64))))


def brier_reference(probs: np.ndarray, labels: np.ndarray) -> float:
  onehot = np.eye(probs.shape[1])[labels]
  return float(np.mean(np.sum((probs.astype(np.float64) - onehot) ** 2, axis=1)))


# ------------------------------------------------------------------------------ ECE


@pytest.mark.parametrize(("seed", "num_bins"), [(0, 1), (0, 15), (1, 2), (1, 40)])
def test_ece_matches_the_reference(seed: int, num_bins: int) -> None:
  probs, labels = random_problem(seed)
  expected = ece_reference(probs, labels, num_bins)
  np.testing.assert_allclose(bayes.ece(probs, labels, num_bins=num_bins), expected, atol=1e-6)
  jitted = jax.jit(bayes.ece, static_argnames="num_bins")
  np.testing.assert_allclose(jitted(probs, labels, num_bins=num_bins), expected, atol=1e-6)
  traced = jax.jit(bayes.ece)  # num_bins traced
  np.testing.assert_allclose(traced(probs, labels, num_bins=num_bins), expected, atol=1e-6)


def test_ece_default_is_15_bins() -> None:
  probs, labels = random_problem(2)
  np.testing.assert_allclose(bayes.ece(probs, labels), ece_reference(probs, labels, 15), atol=1e-6)


def test_confidence_exactly_on_a_bin_edge_goes_to_the_bin_below() -> None:
  # B = 8: the edges b/8 are exact in float32; two classes, confidence 0.5 ... 1.0.
  num_bins = 8
  conf = np.arange(4, 9, dtype=np.float32) / 8
  probs = np.stack([conf, 1 - conf], axis=1)
  labels = np.zeros(len(conf), np.int32)
  bins = bayes.calibration_bins(probs, labels, num_bins=num_bins)
  # 0.5 -> bin 3 = (3/8, 4/8], ..., 1.0 -> bin 7 = (7/8, 1].
  np.testing.assert_array_equal(bins.count, [0, 0, 0, 1, 1, 1, 1, 1])
  # All correct: the ECE is the mean of 1 - confidence.
  expected = float(np.mean(1 - conf))
  np.testing.assert_allclose(bayes.ece(probs, labels, num_bins=num_bins), expected, atol=1e-7)
  np.testing.assert_allclose(ece_reference(probs, labels, num_bins), expected, atol=1e-7)
  # One float32 step above each edge: the bin above.
  above = np.nextafter(conf[:-1], np.float32(1))
  probs_above = np.stack([above, 1 - above], axis=1)
  counts = bayes.calibration_bins(probs_above, labels[:-1], num_bins=num_bins).count
  np.testing.assert_array_equal(counts, [0, 0, 0, 0, 1, 1, 1, 1])


@pytest.mark.parametrize("num_bins", [10, 15, 7, 100])
@pytest.mark.parametrize("jit", [False, True])
def test_float32_confidences_nearest_to_the_edges_match_float64_numpy(num_bins, jit) -> None:
  # float32(b / B) lies just above or just below b / B; the exact comparison puts it on its
  # side, as NumPy does with float64 edges, eagerly and under jit (num_bins constant or traced).
  b = np.arange(num_bins // 2 + 1, num_bins + 1)
  conf = (b / num_bins).astype(np.float32)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  expected = np.searchsorted(edges[1:-1], conf.astype(np.float64), side="left")
  from fsgld_optax.bayes._metrics import _bin_index

  index = jax.jit(_bin_index) if jit else _bin_index
  np.testing.assert_array_equal(index(jnp.asarray(conf), num_bins), expected)
  probs = np.stack([conf, 1 - conf], axis=1)
  labels = np.zeros(len(conf), np.int32)
  counts = bayes.calibration_bins(probs, labels, num_bins=num_bins).count
  np.testing.assert_array_equal(counts, np.bincount(expected, minlength=num_bins))
  ece = (
    jax.jit(bayes.ece)(probs, labels, num_bins=num_bins)
    if jit
    else bayes.ece(probs, labels, num_bins=num_bins)
  )
  np.testing.assert_allclose(ece, ece_reference(probs, labels, num_bins), atol=1e-7)


def test_bin_index_is_exact_on_random_confidences() -> None:
  from fsgld_optax.bayes._metrics import _bin_index

  rng = np.random.default_rng(0)
  conf = np.concatenate([rng.random(20000), [0.0, 1.0, 2.0**-30]]).astype(np.float32)
  for num_bins in (1, 3, 15, 97, 2048):
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    # Exact edges: b / B as float64 is exact enough, float32 values never sit between.
    expected = np.searchsorted(edges[1:-1], conf.astype(np.float64), side="left")
    np.testing.assert_array_equal(jax.jit(_bin_index)(jnp.asarray(conf), num_bins), expected)


def test_one_hot_predictions() -> None:
  # Probabilities exactly 0 and 1: confidence 1.0 in the last bin; ECE = error rate.
  labels = np.array([0, 1, 2, 0], np.int32)
  probs = np.eye(3, dtype=np.float32)[[0, 1, 1, 2]]
  np.testing.assert_allclose(bayes.ece(probs, labels), 0.5, atol=1e-7)
  assert bayes.calibration_bins(probs, labels).count[-1] == 4
  np.testing.assert_allclose(bayes.brier(probs, labels), 1.0, atol=1e-7)  # 2 misses x 2 / 4
  assert float(bayes.nll(probs, labels)) == np.inf  # p = 0 on the true class: no clipping
  assert float(bayes.nll(probs[:2], labels[:2])) == 0.0  # p = 1 on the true class


def test_calibration_bins_give_the_ece() -> None:
  probs, labels = random_problem(3)
  bins = bayes.calibration_bins(probs, labels, num_bins=12)
  full = np.asarray(bins.count) > 0
  weights = np.asarray(bins.count)[full] / len(labels)
  gaps = np.abs(np.asarray(bins.accuracy)[full] - np.asarray(bins.confidence)[full])
  np.testing.assert_allclose(
    np.sum(weights * gaps), bayes.ece(probs, labels, num_bins=12), atol=1e-6
  )
  assert np.isnan(np.asarray(bins.accuracy)[~full]).all()
  assert int(np.sum(bins.count)) == len(labels)


def test_ties_take_the_first_maximum() -> None:
  probs = np.array([[0.5, 0.5], [0.5, 0.5]], np.float32)
  # argmax picks class 0: correct for the first example, wrong for the second.
  np.testing.assert_allclose(bayes.ece(probs, np.array([0, 1])), 0.0, atol=1e-7)
  np.testing.assert_allclose(bayes.ece(probs, np.array([1, 1])), 0.5, atol=1e-7)


# ------------------------------------------------------------------------------ NLL and Brier


@pytest.mark.parametrize("seed", [0, 1])
def test_nll_matches_numpy_and_sklearn(seed: int) -> None:
  probs, labels = random_problem(seed, concentration=2.0)  # no probabilities near 0
  expected = nll_reference(probs, labels)
  np.testing.assert_allclose(bayes.nll(probs, labels), expected, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(bayes.nll)(probs, labels), expected, rtol=1e-6)
  p64 = probs.astype(np.float64)
  p64 /= p64.sum(axis=1, keepdims=True)  # scikit-learn warns at float32 rounding of the sums
  sklearn = skm.log_loss(labels, p64, labels=range(probs.shape[1]))
  np.testing.assert_allclose(bayes.nll(probs, labels), sklearn, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_brier_matches_numpy_and_sklearn(seed: int) -> None:
  probs, labels = random_problem(seed)
  expected = brier_reference(probs, labels)
  np.testing.assert_allclose(bayes.brier(probs, labels), expected, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(bayes.brier)(probs, labels), expected, rtol=1e-6)
  sklearn = skm.brier_score_loss(labels, probs, labels=range(probs.shape[1]))
  np.testing.assert_allclose(bayes.brier(probs, labels), sklearn, rtol=1e-5)


def test_entropy_matches_scipy() -> None:
  probs, _ = random_problem(4)
  probs[0] = [1, 0, 0, 0, 0]  # 0 log 0 = 0
  np.testing.assert_allclose(
    bayes.predictive_entropy(probs), scipy.stats.entropy(probs.T.astype(np.float64)), atol=1e-6
  )


# ------------------------------------------------------------------------------ OOD


@pytest.mark.parametrize("decimals", [None, 1])  # 1 decimal: many ties
def test_ood_scores_match_sklearn(decimals: int | None) -> None:
  rng = np.random.default_rng(0)
  s_in = rng.normal(0.0, 1.0, 300).astype(np.float32)
  s_out = rng.normal(1.0, 1.0, 200).astype(np.float32)
  if decimals is not None:
    s_in, s_out = np.round(s_in, decimals), np.round(s_out, decimals)
  y = np.r_[np.zeros(300), np.ones(200)]
  scores = np.r_[s_in, s_out]
  auroc = skm.roc_auc_score(y, scores)
  aupr_out = skm.average_precision_score(y, scores)
  aupr_in = skm.average_precision_score(1 - y, -scores)
  for f in (lambda f: f, jax.jit):
    np.testing.assert_allclose(f(bayes.ood_auroc)(s_in, s_out), auroc, rtol=1e-6)
    np.testing.assert_allclose(f(bayes.ood_aupr)(s_in, s_out), aupr_out, rtol=1e-6)
    aupr = f(functools.partial(bayes.ood_aupr, positive="in"))(s_in, s_out)
    np.testing.assert_allclose(aupr, aupr_in, rtol=1e-6)


def test_ood_extremes() -> None:
  assert float(bayes.ood_auroc(np.zeros(3), np.ones(2))) == 1.0
  assert float(bayes.ood_auroc(np.ones(3), np.zeros(2))) == 0.0
  assert float(bayes.ood_auroc(np.ones(3), np.ones(2))) == 0.5
  assert float(bayes.ood_aupr(np.zeros(3), np.ones(2))) == 1.0
  np.testing.assert_allclose(bayes.ood_aupr(np.ones(3), np.ones(2)), 0.4)  # chance: 2 of 5


# ------------------------------------------------------------------------------ validation


GOOD_PROBS = np.array([[0.2, 0.8], [0.6, 0.4]], np.float32)
GOOD_LABELS = np.array([1, 0], np.int32)


@pytest.mark.parametrize("metric", [bayes.ece, bayes.nll, bayes.brier])
@pytest.mark.parametrize(
  ("probs", "labels", "match"),
  [
    (GOOD_PROBS[0], GOOD_LABELS, "probs must have shape"),
    (GOOD_PROBS, GOOD_LABELS[:1], r"labels must have shape \(2,\)"),
    (GOOD_PROBS, GOOD_LABELS.astype(np.float32), "labels must be integers"),
    (GOOD_PROBS, np.array([1, 2]), r"labels must lie in \[0, 2\)"),
    (GOOD_PROBS, np.array([-1, 0]), r"labels must lie in \[0, 2\)"),
    (np.log(GOOD_PROBS), GOOD_LABELS, "probs must be probabilities"),
    (GOOD_PROBS * 0.5, GOOD_LABELS, "must sum to 1.*not logits"),
    (np.array([[np.nan, 1.0], [0.5, 0.5]], np.float32), GOOD_LABELS, "and NaN"),
    (np.array([[0, 1], [1, 0]], np.int32), GOOD_LABELS, "probs must be floating"),
  ],
)
def test_bad_inputs_raise_naming_the_argument(metric, probs, labels, match) -> None:
  with pytest.raises(ValueError, match=match):
    metric(probs, labels)


@pytest.mark.parametrize("num_bins", [0, -3, 2.5, True, np.array([3, 4])])
def test_bad_num_bins(num_bins) -> None:
  with pytest.raises(ValueError, match="num_bins must be an int >= 1"):
    bayes.ece(GOOD_PROBS, GOOD_LABELS, num_bins=num_bins)


def test_calibration_bins_needs_a_python_int() -> None:
  with pytest.raises(ValueError, match="num_bins must be a Python int"):
    bayes.calibration_bins(GOOD_PROBS, GOOD_LABELS, num_bins=jnp.int32(5))  # pyright: ignore


@pytest.mark.parametrize("metric", [bayes.ece, bayes.nll, bayes.brier])
def test_labels_out_of_range_under_jit_give_nan(metric) -> None:
  assert np.isnan(jax.jit(metric)(GOOD_PROBS, np.array([1, 2], np.int32)))
  assert np.isfinite(jax.jit(metric)(GOOD_PROBS, GOOD_LABELS))


@pytest.mark.parametrize("metric", [bayes.ood_auroc, bayes.ood_aupr])
def test_bad_scores(metric) -> None:
  with pytest.raises(ValueError, match="scores_in must be a non-empty 1-D array"):
    metric(np.zeros(0), np.ones(2))
  with pytest.raises(ValueError, match="scores_out must be a non-empty 1-D array"):
    metric(np.zeros(3), np.ones((2, 1)))
  with pytest.raises(ValueError, match="scores_out contains NaN"):
    metric(np.zeros(3), np.array([1.0, np.nan]))


def test_aupr_positive_must_be_in_or_out() -> None:
  with pytest.raises(ValueError, match="positive must be 'out' or 'in'"):
    bayes.ood_aupr(np.zeros(3), np.ones(2), positive="ood")  # pyright: ignore[reportArgumentType]


# ------------------------------------------------------------------------------ reliability diagram


def test_reliability_diagram_from_probabilities_or_bins() -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  probs, labels = random_problem(5)
  expected = f"ECE {float(bayes.ece(probs, labels, num_bins=10)):.3f}"
  ax = bayes.plot_reliability_diagram(probs, labels, num_bins=10, title="model")
  assert ax.get_title() == f"model, {expected}"
  bins = bayes.calibration_bins(probs, labels, num_bins=10)
  heights = [p.get_height() for p in ax.patches[:10]]
  np.testing.assert_allclose(heights, np.nan_to_num(np.asarray(bins.accuracy)), rtol=1e-6)
  assert bayes.plot_reliability_diagram(bins=bins).get_title() == expected
  with pytest.raises(ValueError, match="needs probs and labels, or bins"):
    bayes.plot_reliability_diagram(probs)
  with pytest.raises(ValueError, match="not both"):
    bayes.plot_reliability_diagram(probs, labels, bins=bins)
  plt.close("all")
