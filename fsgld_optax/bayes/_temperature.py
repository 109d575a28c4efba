"""The temperature and data-size conventions of Bayesian sampling with a mean loss."""

from __future__ import annotations

import math
from typing import Any


def posterior_beta(num_data: int, temperature: float = 1.0) -> float:
  r"""The inverse temperature β that samples the (tempered) posterior from a mean loss.

  A model trained on a mean loss over a batch,
  :math:`\bar L(\theta) = \frac{1}{|B|}\sum_{i \in B} \ell(\theta; x_i, y_i)`, with
  :math:`\ell = -\log p(y_i \mid x_i, \theta)`, has the posterior potential

  .. math::

    U(\theta) = -\sum_{i=1}^{N} \log p(y_i \mid x_i, \theta) - \log p(\theta)
      \approx N\, \bar L(\theta) + \frac{\alpha}{2} \lVert\theta\rVert^2

  for N training examples and a Gaussian prior :math:`\mathcal N(0, \alpha^{-1} I)`.
  The tempered posterior :math:`p_T(\theta \mid D) \propto \exp(-U(\theta)/T)` is the
  stationary law of the Langevin step the optimizers of this package take on the mean loss,

  .. math::

    \theta_{k+1} = \theta_k - \lambda_k \bigl(\nabla \bar L(\theta_k) + w\,\theta_k\bigr)
      + \sqrt{2 \lambda_k / \beta}\; \xi_k,

  whose stationary law is :math:`\propto \exp\bigl(-\beta (\bar L + \tfrac{w}{2}
  \lVert\theta\rVert^2)\bigr)`, exactly when

  .. math::

    \beta = \frac{N}{T}, \qquad w = \frac{\alpha}{N}
    \quad(\text{prior precision } \alpha = N w,\ \text{prior std } 1/\sqrt{N w}).

  So ``weight_decay=w`` is the Gaussian prior, and ``beta=posterior_beta(N, T)`` sets the
  temperature. ``T = 1`` is the Bayes posterior; ``T < 1`` a *cold* posterior, sharper than
  Bayes (often better in deep learning; Wenzel et al., 2020); ``T > 1`` a warm one. The same
  step written with the summed loss :math:`U` has step size :math:`\epsilon = \lambda / N`
  and noise :math:`\sqrt{2\epsilon T}\,\xi`, the usual SGLD form; the official fSGLD
  Bayesian script adds the noise as a gradient term :math:`\sqrt{2T/(\lambda N)}\,\xi`,
  the same step. With fSGLD's coupling :math:`\sigma = \beta^{-(1+\eta)/4}` the perturbation
  scale follows from β, so a colder posterior also smooths less.

  Args:
    num_data: N, the number of training examples the mean loss stands for (≥ 1).
    temperature: T > 0 (finite); 1 for the Bayes posterior, below 1 for a cold one.

  Returns:
    β = N / T as a Python float.

  Raises:
    ValueError: if ``num_data`` is not a positive int or ``temperature`` is not a positive
      finite number.

  Examples:
    >>> from fsgld_optax import bayes
    >>> bayes.posterior_beta(50_000)
    50000.0
    >>> bayes.posterior_beta(50_000, temperature=1 / 50_000)  # a cold posterior
    2500000000.0

  References:
    Welling and Teh, *Bayesian Learning via Stochastic Gradient Langevin Dynamics*, ICML 2011.
    Wenzel et al., *How Good is the Bayes Posterior in Deep Neural Networks Really?*, ICML
    2020. https://arxiv.org/abs/2002.02405
  """
  if isinstance(num_data, bool) or not isinstance(num_data, int) or num_data < 1:
    raise ValueError(f"num_data must be a positive int, got {num_data!r}.")
  t = _positive_finite("temperature", temperature)
  return num_data / t


def _positive_finite(name: str, value: Any) -> float:
  try:
    x = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a positive finite number, got {value!r}.") from None
  if not (math.isfinite(x) and x > 0):
    raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
  return x
