"""Predictive metrics in JAX: calibration (ECE), NLL, Brier score, OOD AUROC and AUPR.

Every metric is a pure function of arrays and works under ``jax.jit`` (also with
``num_bins`` traced); called outside ``jit`` it checks its arguments, then runs one compiled
function (one compilation per shape). The checks run where the arguments are concrete
(outside ``jit``): shapes, label range, probabilities in [0, 1] summing to 1 (logits passed
by mistake are the usual silent error), ``num_bins``; each error names the argument. Under
``jit`` a label out of range makes the metric NaN instead.
"""

from __future__ import annotations

import functools
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def _concrete(x: Any) -> np.ndarray | None:
  """``x`` as a NumPy array if it is concrete, ``None`` if it is traced."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def _check_probs(name: str, probs: jax.Array, fn: str) -> None:
  if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] == 0:
    raise ValueError(
      f"{fn}: {name} must have shape (num_examples, num_classes) with both > 0, got {probs.shape}."
    )
  if not jnp.issubdtype(probs.dtype, jnp.floating):
    raise ValueError(f"{fn}: {name} must be floating point, got dtype {probs.dtype}.")
  p = _concrete(probs)
  if p is None:
    return
  p = p.astype(np.float64)
  if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
    raise ValueError(
      f"{fn}: {name} must be probabilities in [0, 1] (apply jax.nn.softmax to logits); got "
      f"values in [{np.nanmin(p):.4g}, {np.nanmax(p):.4g}]"
      f"{'' if np.isfinite(p).all() else ' and NaN'}."
    )
  tol = max(1e-3, 50 * float(jnp.finfo(probs.dtype).eps))
  worst = float(np.max(np.abs(p.sum(axis=1) - 1)))
  if worst > tol:
    raise ValueError(
      f"{fn}: every row of {name} must sum to 1 (within {tol:.0e}); the worst row is off by "
      f"{worst:.3g}. Pass probabilities, not logits."
    )


def _check_labels(labels: jax.Array, num_examples: int, num_classes: int, fn: str) -> None:
  if labels.shape != (num_examples,):
    raise ValueError(
      f"{fn}: labels must have shape ({num_examples},) to match probs, got {labels.shape}."
    )
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"{fn}: labels must be integers (class indices), got dtype {labels.dtype}.")
  y = _concrete(labels)
  if y is not None and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(
      f"{fn}: labels must lie in [0, {num_classes}) (num_classes from probs), got values in "
      f"[{y.min()}, {y.max()}]."
    )


def _prepare(probs: Any, labels: Any, fn: str) -> tuple[jax.Array, jax.Array]:
  probs, labels = jnp.asarray(probs), jnp.asarray(labels)
  _check_probs("probs", probs, fn)
  _check_labels(labels, probs.shape[0], probs.shape[1], fn)
  return probs, labels


def _nan_if_bad_labels(value: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
  """NaN where a (traced) label is out of range, so that bad labels never pass silently."""
  valid = jnp.all((labels >= 0) & (labels < num_classes))
  return jnp.where(valid, value, jnp.nan)


def _check_num_bins(num_bins: Any, fn: str) -> None:
  if isinstance(num_bins, bool):
    raise ValueError(f"{fn}: num_bins must be an int >= 1, got {num_bins!r}.")
  n = _concrete(num_bins)
  if n is None:
    return
  if n.shape != () or (n.dtype.kind not in "iu" and not (n.dtype.kind == "f" and n == int(n))):
    raise ValueError(f"{fn}: num_bins must be an int >= 1, got {num_bins!r}.")
  if n < 1:
    raise ValueError(f"{fn}: num_bins must be an int >= 1, got {num_bins!r}.")


def _bin_index(confidence: jax.Array, num_bins: Any) -> jax.Array:
  """The equal-width bin of each confidence: bin b is (b/B, (b+1)/B], bin 0 is [0, 1/B].

  The edges are the exact rationals b/B, compared with the exact value of each confidence
  (as a NumPy float64 implementation does for float32 inputs), without rounding: a
  confidence exactly on an edge falls in the bin below it, as in Guo et al.'s code
  (``conf > lower & conf <= upper``). ``num_bins`` may be traced; the comparison is exact
  for B ≤ 2048 in float32 (B ≤ 2**25 in float64).

  How: the bin is the number of integers b in [1, B - 1] below X = conf · B. Splitting the
  confidence into its high and low halves of mantissa bits, conf = hi + lo, makes
  P = hi·B and Q = lo·B exact, with X = P + Q and 0 ≤ Q < 1. Every b ≤ ⌊P⌋ - 1 is below X;
  b = ⌊P⌋ and b = ⌊P⌋ + 1 are below X iff Q > b - P, a difference that is exact where it
  matters (Sterbenz); no larger b is.
  """
  conf = confidence
  if conf.dtype not in (jnp.float32, jnp.float64):
    conf = conf.astype(jnp.float32)  # exact for float16 and bfloat16
  dtype = conf.dtype
  int_type = jnp.int32 if dtype == jnp.float32 else jnp.int64
  low_bits = (jnp.finfo(dtype).nmant + 1) // 2
  mask = jnp.asarray(~((1 << low_bits) - 1), int_type)
  hi = jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(conf, int_type) & mask, dtype)
  lo = conf - hi
  nb = jnp.asarray(num_bins, jnp.int32)
  b_float = nb.astype(dtype)
  p, q = hi * b_float, lo * b_float
  f = jnp.floor(p)
  fi = f.astype(jnp.int32)
  count = jnp.clip(fi - 1, 0, nb - 1)
  for offset in (0, 1):
    edge = fi + offset
    inside = (edge >= 1) & (edge <= nb - 1)
    count = count + (inside & (q > (f + offset) - p)).astype(jnp.int32)
  return count


def ece(
  probs: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, *, num_bins: Any = 15
) -> jax.Array:
  r"""Expected calibration error of the top-label confidence, equal-width bins.

  .. math::

    \mathrm{ECE} = \sum_{b=1}^{B} \frac{|S_b|}{N}\,
      \bigl|\operatorname{acc}(S_b) - \operatorname{conf}(S_b)\bigr|
      = \frac{1}{N}\sum_{b=1}^{B} \Bigl|\sum_{i \in S_b} (\mathbb 1[\hat y_i = y_i]
      - \hat p_i)\Bigr|,

  with confidence :math:`\hat p_i = \max_k p_{ik}`, prediction
  :math:`\hat y_i = \arg\max_k p_{ik}` (the first maximum on ties) and
  :math:`S_b = \{i : \hat p_i \in ((b-1)/B, b/B]\}` (right-closed bins, as in Guo et al.'s
  code; the first bin also holds 0). The edges are the exact rationals b/B, compared without
  rounding: a confidence exactly on an edge (e.g. 0.5, or 1.0) falls in the bin *below* it;
  the float32 number nearest to 0.6 is 0.6000000238 > 3/5, so with B = 15 it falls in the bin
  above 3/5, as it does in a NumPy implementation with float64 edges.

  Args:
    probs: predicted probabilities, shape ``(N, K)``, rows summing to 1.
    labels: true classes, integers in ``[0, K)``, shape ``(N,)``.
    num_bins: B ≥ 1 (may be traced under ``jit``).

  Returns:
    The ECE as a scalar in [0, 1] (NaN under ``jit`` if a label is out of range).

  Raises:
    ValueError: for wrong shapes or dtypes, probabilities outside [0, 1] or rows not summing
      to 1, labels out of range, or ``num_bins`` not an int ≥ 1 (checked where concrete).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from fsgld_optax import bayes
    >>> probs = jnp.array([[0.9, 0.1], [0.55, 0.45], [0.3, 0.7]])
    >>> print(f"{bayes.ece(probs, jnp.array([0, 1, 1]), num_bins=10):.4f}")
    0.3167
    >>> print(f"{jax.jit(bayes.ece)(probs, jnp.array([0, 1, 1]), num_bins=10):.4f}")
    0.3167

  References:
    Guo, Pleiss, Sun and Weinberger, *On Calibration of Modern Neural Networks*, ICML 2017.
    https://arxiv.org/abs/1706.04599
  """
  probs, labels = _prepare(probs, labels, "ece")
  _check_num_bins(num_bins, "ece")
  return _ece(probs, labels, num_bins)


@jax.jit
def _ece(probs: jax.Array, labels: jax.Array, num_bins: Any) -> jax.Array:
  confidence = jnp.max(probs, axis=-1)
  correct = (jnp.argmax(probs, axis=-1) == labels).astype(probs.dtype)
  bins = _bin_index(confidence, num_bins)
  # Sum (correct - confidence) per bin without a static number of bins: sort by bin, take
  # cumulative sums, and difference them at the end of each run of equal bins.
  order = jnp.argsort(bins)
  sorted_bins = bins[order]
  cumulative = jnp.cumsum((correct - confidence)[order])
  n = sorted_bins.shape[0]
  is_end = jnp.append(sorted_bins[1:] != sorted_bins[:-1], True)
  start = jnp.searchsorted(sorted_bins, sorted_bins, side="left")
  before = jnp.where(start > 0, cumulative[jnp.maximum(start - 1, 0)], 0)
  total = jnp.sum(jnp.where(is_end, jnp.abs(cumulative - before), 0)) / n
  return _nan_if_bad_labels(total, labels, probs.shape[1])


def nll(probs: jax.typing.ArrayLike, labels: jax.typing.ArrayLike) -> jax.Array:
  r"""Mean negative log-likelihood of the true class.

  .. math::

    \mathrm{NLL} = -\frac{1}{N}\sum_{i=1}^{N} \log p_{i, y_i}.

  No clipping: a true class predicted with probability exactly 0 gives ``inf`` (the honest
  value; clip the probabilities yourself if you want a finite surrogate), and probability 1
  gives 0.

  Args:
    probs: predicted probabilities, shape ``(N, K)``, rows summing to 1.
    labels: true classes, integers in ``[0, K)``, shape ``(N,)``.

  Returns:
    The mean NLL (nats) as a scalar (NaN under ``jit`` if a label is out of range).

  Raises:
    ValueError: as :func:`ece`.

  Examples:
    >>> import jax.numpy as jnp
    >>> from fsgld_optax import bayes
    >>> probs = jnp.array([[0.9, 0.1], [0.55, 0.45], [0.3, 0.7]])
    >>> print(f"{bayes.nll(probs, jnp.array([0, 1, 1])):.4f}")
    0.4202
  """
  probs, labels = _prepare(probs, labels, "nll")
  return _nll(probs, labels)


@jax.jit
def _nll(probs: jax.Array, labels: jax.Array) -> jax.Array:
  safe = jnp.clip(labels, 0, probs.shape[1] - 1)
  p_true = jnp.take_along_axis(probs, safe[:, None], axis=-1)[:, 0]
  return _nan_if_bad_labels(-jnp.mean(jnp.log(p_true)), labels, probs.shape[1])


def brier(probs: jax.typing.ArrayLike, labels: jax.typing.ArrayLike) -> jax.Array:
  r"""Multi-class Brier score: squared error to the one-hot label, summed over classes.

  .. math::

    \mathrm{BS} = \frac{1}{N}\sum_{i=1}^{N}\sum_{k=1}^{K} \bigl(p_{ik} - \mathbb 1[k = y_i]\bigr)^2
    \in [0, 2].

  This is Brier's original definition (scikit-learn's ``brier_score_loss`` for more than
  two classes); some papers divide it by K or, for two classes, by 2.

  Args:
    probs: predicted probabilities, shape ``(N, K)``, rows summing to 1.
    labels: true classes, integers in ``[0, K)``, shape ``(N,)``.

  Returns:
    The Brier score as a scalar (NaN under ``jit`` if a label is out of range).

  Raises:
    ValueError: as :func:`ece`.

  Examples:
    >>> import jax.numpy as jnp
    >>> from fsgld_optax import bayes
    >>> probs = jnp.array([[0.9, 0.1], [0.55, 0.45], [0.3, 0.7]])
    >>> print(f"{bayes.brier(probs, jnp.array([0, 1, 1])):.4f}")
    0.2683

  References:
    Brier, *Verification of forecasts expressed in terms of probability*, Monthly Weather
    Review, 1950.
  """
  probs, labels = _prepare(probs, labels, "brier")
  return _brier(probs, labels)


@jax.jit
def _brier(probs: jax.Array, labels: jax.Array) -> jax.Array:
  onehot = jax.nn.one_hot(labels, probs.shape[1], dtype=probs.dtype)
  score = jnp.mean(jnp.sum(jnp.square(probs - onehot), axis=-1))
  return _nan_if_bad_labels(score, labels, probs.shape[1])


def predictive_entropy(probs: jax.typing.ArrayLike) -> jax.Array:
  r"""The entropy of each predictive distribution, a score for out-of-distribution inputs.

  .. math::

    H_i = -\sum_{k} p_{ik} \log p_{ik}, \qquad 0 \log 0 = 0.

  Args:
    probs: predicted probabilities, shape ``(N, K)``.

  Returns:
    Entropies (nats), shape ``(N,)``, in ``[0, log K]``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from fsgld_optax import bayes
    >>> print(bayes.predictive_entropy(jnp.array([[1.0, 0.0], [0.5, 0.5]])))
    [0.        0.6931472]
  """
  probs = jnp.asarray(probs)
  _check_probs("probs", probs, "predictive_entropy")
  return _entropy(probs)


@jax.jit
def _entropy(probs: jax.Array) -> jax.Array:
  return -jnp.sum(jax.scipy.special.xlogy(probs, probs), axis=-1)


def _check_scores(name: str, scores: Any, fn: str) -> jax.Array:
  scores = jnp.asarray(scores)
  if scores.ndim != 1 or scores.shape[0] == 0:
    raise ValueError(f"{fn}: {name} must be a non-empty 1-D array, got shape {scores.shape}.")
  s = _concrete(scores)
  if s is not None and np.isnan(s.astype(np.float64)).any():
    raise ValueError(f"{fn}: {name} contains NaN.")
  return scores


def _common_float(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  dtype = jnp.promote_types(jnp.result_type(a, b), jnp.result_type(float))
  return a.astype(dtype), b.astype(dtype)


def ood_auroc(scores_in: jax.typing.ArrayLike, scores_out: jax.typing.ArrayLike) -> jax.Array:
  r"""Area under the ROC curve for detecting out-of-distribution inputs by a score.

  The score must be *higher for out-of-distribution* inputs, e.g. the
  :func:`predictive_entropy` or ``1 - max(probs)``. With :math:`s^{in}` and
  :math:`s^{out}` the scores of the two sets,

  .. math::

    \mathrm{AUROC} = \frac{1}{n_{in} n_{out}} \sum_{i, j}
      \Bigl(\mathbb 1[s^{out}_j > s^{in}_i] + \tfrac12 \mathbb 1[s^{out}_j = s^{in}_i]\Bigr),

  the probability that a random OOD input scores higher than a random in-distribution one
  (the Mann-Whitney statistic; equal to scikit-learn's ``roc_auc_score`` with OOD as the
  positive class, ties included). 0.5 is chance, 1 perfect separation. Negating the score and
  swapping the roles of the two sets gives the same number.

  Args:
    scores_in: scores of the in-distribution inputs, shape ``(n_in,)``.
    scores_out: scores of the out-of-distribution inputs, shape ``(n_out,)``.

  Returns:
    The AUROC as a scalar.

  Raises:
    ValueError: for empty or non-1-D scores, or NaN scores (checked where concrete).

  Examples:
    >>> import jax.numpy as jnp
    >>> from fsgld_optax import bayes
    >>> print(bayes.ood_auroc(jnp.array([0.1, 0.4, 0.35]), jnp.array([0.8, 0.4])))
    0.9166667

  References:
    Hendrycks and Gimpel, *A Baseline for Detecting Misclassified and Out-of-Distribution
    Examples in Neural Networks*, ICLR 2017. https://arxiv.org/abs/1610.02136
  """
  s_in = _check_scores("scores_in", scores_in, "ood_auroc")
  s_out = _check_scores("scores_out", scores_out, "ood_auroc")
  return _auroc(*_common_float(s_in, s_out))


@jax.jit
def _auroc(s_in: jax.Array, s_out: jax.Array) -> jax.Array:
  sorted_in = jnp.sort(s_in)
  below = jnp.searchsorted(sorted_in, s_out, side="left")
  ties = jnp.searchsorted(sorted_in, s_out, side="right") - below
  per_out = (below.astype(s_in.dtype) + 0.5 * ties.astype(s_in.dtype)) / s_in.shape[0]
  return jnp.mean(per_out)


def ood_aupr(
  scores_in: jax.typing.ArrayLike,
  scores_out: jax.typing.ArrayLike,
  *,
  positive: Literal["out", "in"] = "out",
) -> jax.Array:
  r"""Area under the precision-recall curve (average precision) for OOD detection.

  With the positive set P (``positive="out"``: the OOD inputs, scored as given, higher for
  OOD; ``positive="in"``: the in-distribution inputs, scored by the negated score) and
  :math:`\mathrm{prec}(t)` the fraction of positives among all inputs scoring ≥ t,

  .. math::

    \mathrm{AP} = \frac{1}{|P|} \sum_{j \in P} \mathrm{prec}(s_j)
      = \sum_n (R_n - R_{n-1}) P_n,

  scikit-learn's ``average_precision_score`` (no interpolation; ties share a threshold).
  Unlike the AUROC it depends on which set is positive and on the ratio of set sizes
  (chance level: the positive fraction). "AUPR-Out" is ``positive="out"``, "AUPR-In"
  ``positive="in"``.

  Args:
    scores_in: scores of the in-distribution inputs, shape ``(n_in,)``, higher for OOD.
    scores_out: scores of the out-of-distribution inputs, shape ``(n_out,)``.
    positive: ``"out"`` (default) or ``"in"``.

  Returns:
    The average precision as a scalar.

  Raises:
    ValueError: as :func:`ood_auroc`, or for an unknown ``positive``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from fsgld_optax import bayes
    >>> print(bayes.ood_aupr(jnp.array([0.1, 0.4, 0.35]), jnp.array([0.8, 0.4])))
    0.8333334
  """
  if positive not in ("out", "in"):
    raise ValueError(f"ood_aupr: positive must be 'out' or 'in', got {positive!r}.")
  s_in = _check_scores("scores_in", scores_in, "ood_aupr")
  s_out = _check_scores("scores_out", scores_out, "ood_aupr")
  return _aupr(*_common_float(s_in, s_out), positive=positive)


@functools.partial(jax.jit, static_argnames="positive")
def _aupr(s_in: jax.Array, s_out: jax.Array, positive: str) -> jax.Array:
  pos, neg = (s_out, s_in) if positive == "out" else (-s_in, -s_out)
  sorted_pos, sorted_all = jnp.sort(pos), jnp.sort(jnp.concatenate([pos, neg]))
  true_at_least = pos.shape[0] - jnp.searchsorted(sorted_pos, pos, side="left")
  all_at_least = sorted_all.shape[0] - jnp.searchsorted(sorted_all, pos, side="left")
  return jnp.mean(true_at_least.astype(pos.dtype) / all_at_least.astype(pos.dtype))


class CalibrationBins(NamedTuple):
  """Per-bin statistics of a reliability diagram (see :func:`calibration_bins`).

  Attributes:
    edges: ``float[B + 1]``, the bin edges ``b / B``.
    count: ``int32[B]``, examples per bin.
    confidence: ``float[B]``, mean top-label confidence per bin (NaN for empty bins).
    accuracy: ``float[B]``, accuracy per bin (NaN for empty bins).
  """

  edges: jax.Array
  count: jax.Array
  confidence: jax.Array
  accuracy: jax.Array


def calibration_bins(
  probs: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, *, num_bins: int = 15
) -> CalibrationBins:
  r"""The bins of a reliability diagram: count, mean confidence and accuracy per bin.

  Same binning as :func:`ece`, so
  :math:`\mathrm{ECE} = \sum_b \frac{n_b}{N} |\mathrm{acc}_b - \mathrm{conf}_b|` over the
  non-empty bins. ``num_bins`` must be a Python int (it sets the output shape).

  Args:
    probs: predicted probabilities, shape ``(N, K)``.
    labels: true classes, shape ``(N,)``.
    num_bins: B ≥ 1.

  Returns:
    A :class:`CalibrationBins`.

  Raises:
    ValueError: as :func:`ece`.

  Examples:
    >>> import jax.numpy as jnp
    >>> from fsgld_optax import bayes
    >>> probs = jnp.array([[0.9, 0.1], [0.55, 0.45], [0.3, 0.7]])
    >>> bins = bayes.calibration_bins(probs, jnp.array([0, 1, 1]), num_bins=5)
    >>> print(bins.count)
    [0 0 1 1 1]
  """
  probs, labels = _prepare(probs, labels, "calibration_bins")
  if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
    raise ValueError(f"calibration_bins: num_bins must be a Python int >= 1, got {num_bins!r}.")
  return _calibration_bins(probs, labels, num_bins)


@functools.partial(jax.jit, static_argnums=2)
def _calibration_bins(probs: jax.Array, labels: jax.Array, num_bins: int) -> CalibrationBins:
  confidence = jnp.max(probs, axis=-1)
  correct = (jnp.argmax(probs, axis=-1) == labels).astype(probs.dtype)
  bins = _bin_index(confidence, num_bins)
  count = jax.ops.segment_sum(jnp.ones_like(bins), bins, num_segments=num_bins)
  denominator = jnp.where(count > 0, count, 1).astype(probs.dtype)
  mean_conf = jax.ops.segment_sum(confidence, bins, num_segments=num_bins) / denominator
  accuracy = jax.ops.segment_sum(correct, bins, num_segments=num_bins) / denominator
  empty = count == 0
  edges = jnp.asarray(np.arange(num_bins + 1) / num_bins, probs.dtype)
  return CalibrationBins(
    edges=edges,
    count=count,
    confidence=jnp.where(empty, jnp.nan, mean_conf),
    accuracy=jnp.where(empty, jnp.nan, accuracy),
  )
