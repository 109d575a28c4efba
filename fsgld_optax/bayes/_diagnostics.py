"""MCMC convergence diagnostics (split R-hat, effective sample size) on function-space outputs.

In weight space, chains of a neural network never mix (permutation symmetries alone give
many equivalent modes), so R-hat of the weights says nothing useful. Compute the diagnostics
on what the samples predict instead: e.g. the predicted probability of the true class of a
set of test inputs, shaped ``(chains, samples, inputs)``.

The estimators come from BlackJAX (``pip install fsgld-optax[bayes]``): they are JAX
functions (jit-able, on device arrays), implement the rank-normalised split R-hat and the
bulk and tail ESS of Vehtari et al. (2021) as ArviZ does, and need nothing beyond JAX,
whereas ArviZ brings xarray, pandas and h5py.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import jax
import jax.numpy as jnp


@functools.cache
def _estimator(name: str) -> Any:
  """BlackJAX's ``name`` on standard axes (chains, draws, ...), jitted once."""
  try:
    import blackjax.diagnostics
  except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
      "The MCMC diagnostics need blackjax: pip install 'fsgld-optax[bayes]'."
    ) from error
  fn = getattr(blackjax.diagnostics, name)

  @jax.jit
  def estimate(x: jax.Array) -> jax.Array:
    with jax.numpy_rank_promotion("allow"):  # BlackJAX broadcasts implicitly
      return fn(x, chain_axis=0, sample_axis=1)

  return estimate


def _standardise(draws: Any, chain_axis: int, sample_axis: int, fn: str) -> jax.Array:
  draws = jnp.asarray(draws)
  if draws.ndim < 2:
    raise ValueError(f"{fn}: draws needs a chain axis and a sample axis, got shape {draws.shape}.")
  ndim = draws.ndim
  for name, axis in (("chain_axis", chain_axis), ("sample_axis", sample_axis)):
    if not -ndim <= axis < ndim:
      raise ValueError(f"{fn}: {name}={axis} is out of range for draws of shape {draws.shape}.")
  if chain_axis % ndim == sample_axis % ndim:
    raise ValueError(f"{fn}: chain_axis and sample_axis must differ, both are {chain_axis}.")
  if draws.shape[sample_axis] < 4:
    raise ValueError(
      f"{fn}: needs at least 4 draws per chain (sample_axis={sample_axis}), got "
      f"{draws.shape[sample_axis]}."
    )
  if not jnp.issubdtype(draws.dtype, jnp.floating):
    draws = draws.astype(jnp.result_type(float))
  return jnp.moveaxis(draws, (chain_axis, sample_axis), (0, 1))


def rhat(draws: jax.typing.ArrayLike, *, chain_axis: int = 0, sample_axis: int = 1) -> jax.Array:
  r"""Rank-normalised split R-hat of each quantity in ``draws`` (Vehtari et al., 2021).

  Every chain is split in half; with M split chains of n draws, W the mean within-chain
  variance and B/n the variance of the chain means,

  .. math::

    \hat R = \sqrt{\frac{\frac{n-1}{n} W + \frac{1}{n} B}{W}},

  computed on rank-normalised draws and on rank-normalised folded draws
  :math:`|x - \operatorname{median}(x)|`, and the larger is returned. Values near 1 (below
  1.01, Vehtari et al.) suggest the chains agree. Uses ``blackjax.diagnostics.rhat``.

  Args:
    draws: array with a chain axis and a sample axis (≥ 4 draws per chain); other axes are
      separate quantities.
    chain_axis: the axis of the chains.
    sample_axis: the axis of the draws within a chain.

  Returns:
    R-hat with the chain and sample axes removed.

  Raises:
    ValueError: for fewer than two axes, out-of-range or equal axes, or fewer than 4 draws.

  Examples:
    >>> import jax
    >>> from fsgld_optax import bayes
    >>> draws = jax.random.normal(jax.random.key(0), (4, 100))
    >>> print(f"{bayes.rhat(draws):.2f}")
    1.0...

  References:
    Vehtari, Gelman, Simpson, Carpenter and Bürkner, *Rank-normalization, folding, and
    localization: An improved R-hat for assessing convergence of MCMC*, Bayesian Analysis,
    2021. https://arxiv.org/abs/1903.08008
  """
  return _estimator("rhat")(_standardise(draws, chain_axis, sample_axis, "rhat"))


def effective_sample_size(
  draws: jax.typing.ArrayLike,
  *,
  chain_axis: int = 0,
  sample_axis: int = 1,
  kind: Literal["bulk", "tail"] = "bulk",
) -> jax.Array:
  r"""Effective sample size of each quantity in ``draws`` (Vehtari et al., 2021).

  .. math::

    \hat N_{\mathrm{eff}} = \frac{M n}{\hat\tau}, \qquad
    \hat\tau = -1 + 2\sum_{t=0}^{K} \hat P_t,

  with :math:`\hat P_t = \hat\rho_{2t} + \hat\rho_{2t+1}` from the autocorrelations,
  truncated by Geyer's initial monotone sequence, as in Stan. ``"bulk"`` computes it on
  rank-normalised split chains (``blackjax.diagnostics.ess_bulk``), ``"tail"`` on the 5% and
  95% quantile indicators (``ess_tail``).

  Args:
    draws: array with a chain axis and a sample axis (≥ 4 draws per chain).
    chain_axis: the axis of the chains.
    sample_axis: the axis of the draws within a chain.
    kind: ``"bulk"`` or ``"tail"``.

  Returns:
    The ESS with the chain and sample axes removed.

  Raises:
    ValueError: as :func:`rhat`, or for an unknown ``kind``.

  Examples:
    >>> import jax
    >>> from fsgld_optax import bayes
    >>> draws = jax.random.normal(jax.random.key(0), (4, 100))
    >>> print(bool(200 < bayes.effective_sample_size(draws) < 800))
    True

  References:
    Vehtari et al., Bayesian Analysis, 2021. https://arxiv.org/abs/1903.08008
  """
  if kind not in ("bulk", "tail"):
    raise ValueError(f"effective_sample_size: kind must be 'bulk' or 'tail', got {kind!r}.")
  x = _standardise(draws, chain_axis, sample_axis, "effective_sample_size")
  return _estimator("ess_bulk" if kind == "bulk" else "ess_tail")(x)
