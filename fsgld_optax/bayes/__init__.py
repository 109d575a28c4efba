"""Bayesian deep learning with fSGLD: cyclical SG-MCMC, sample collection, model averaging.

The workflow of the paper's Bayesian experiment (ResNet-18 on CIFAR-10/100, a cyclical
cosine step size over 4 cycles, samples at the end of each cycle, Bayesian model averaging,
SVHN as the out-of-distribution set) in a minibatch training loop:

* :func:`posterior_beta`: the temperature convention, β = N/T for a mean loss over a batch.
* :func:`cyclical_schedule`: per step, the cyclical step size, β (``inf`` while exploring,
  so the Langevin noise is off, without recompiling) and whether to collect the state; for
  :func:`~fsgld_optax.fsgld` and the other samplers of the package unchanged.
* :func:`init_sample_buffer`, :func:`add_sample`, :func:`collected_samples`: an on-device
  ring buffer of samples that lives inside ``jit``; :class:`SampleCollector`: samples in host
  memory or on disk (orbax) for big models. Both survive a checkpoint and restart bitwise.
* :func:`average_predictions`: the streamed mean of predicted probabilities over samples
  (BatchNorm statistics stored with each sample).
* Metrics (JAX, jit-able): :func:`ece`, :func:`nll`, :func:`brier`, :func:`ood_auroc`,
  :func:`ood_aupr`, :func:`predictive_entropy`, :func:`calibration_bins`, and
  :func:`plot_reliability_diagram`.
* Diagnostics on function-space outputs across chains: :func:`rhat` and
  :func:`effective_sample_size` (BlackJAX's, ``pip install fsgld-optax[bayes]``).

Examples:
  A cyclical fSGLD chain on a toy regression, collecting a sample at the end of each cycle
  inside the jitted step:

  >>> import jax, jax.numpy as jnp, optax, fsgld_optax
  >>> from fsgld_optax import bayes
  >>> x = jnp.linspace(-1, 1, 32)[:, None]
  >>> y = 2 * x[:, 0]
  >>> loss_fn = lambda w: jnp.mean((x @ w - y) ** 2)
  >>> schedule = bayes.cyclical_schedule(
  ...     0.1, total_steps=400, num_cycles=4, beta=bayes.posterior_beta(32))
  >>> tx = fsgld_optax.fsgld(schedule.learning_rate, schedule.beta, key=0)
  >>> grad_fn = fsgld_optax.perturbed_value_and_grad(loss_fn)
  >>> @jax.jit
  ... def step(w, opt_state, buffer):
  ...   k = fsgld_optax.find_fsgld_state(opt_state).count
  ...   _, grads = grad_fn(w, opt_state)
  ...   updates, opt_state = tx.update(grads, opt_state, w)
  ...   w = optax.apply_updates(w, updates)
  ...   return w, opt_state, bayes.add_sample(buffer, w, when=schedule.should_collect(k))
  >>> w = jnp.zeros(1)
  >>> opt_state, buffer = tx.init(w), bayes.init_sample_buffer(w, capacity=4)
  >>> for _ in range(400):
  ...   w, opt_state, buffer = step(w, opt_state, buffer)
  >>> samples = bayes.collected_samples(buffer)
  >>> print(samples.shape, bool(jnp.all(jnp.abs(samples - 2) < 1)))
  (4, 1) True

References:
  Bruno, Hwang, An, Sabanis and Lim, *Flatness-Aware Stochastic Gradient Langevin
  Dynamics*, ICML 2026. https://arxiv.org/abs/2510.02174

  Zhang, Li, Zhang, Chen and Wilson, *Cyclical Stochastic Gradient MCMC for Bayesian Deep
  Learning*, ICLR 2020. https://arxiv.org/abs/1902.03932
"""

from fsgld_optax.bayes._averaging import average_predictions as average_predictions
from fsgld_optax.bayes._collect import SampleBuffer as SampleBuffer
from fsgld_optax.bayes._collect import SampleCollector as SampleCollector
from fsgld_optax.bayes._collect import add_sample as add_sample
from fsgld_optax.bayes._collect import collected_samples as collected_samples
from fsgld_optax.bayes._collect import init_sample_buffer as init_sample_buffer
from fsgld_optax.bayes._cyclical import CyclicalSchedule as CyclicalSchedule
from fsgld_optax.bayes._cyclical import cyclical_schedule as cyclical_schedule
from fsgld_optax.bayes._diagnostics import effective_sample_size as effective_sample_size
from fsgld_optax.bayes._diagnostics import rhat as rhat
from fsgld_optax.bayes._metrics import CalibrationBins as CalibrationBins
from fsgld_optax.bayes._metrics import brier as brier
from fsgld_optax.bayes._metrics import calibration_bins as calibration_bins
from fsgld_optax.bayes._metrics import ece as ece
from fsgld_optax.bayes._metrics import nll as nll
from fsgld_optax.bayes._metrics import ood_aupr as ood_aupr
from fsgld_optax.bayes._metrics import ood_auroc as ood_auroc
from fsgld_optax.bayes._metrics import predictive_entropy as predictive_entropy
from fsgld_optax.bayes._plot import plot_reliability_diagram as plot_reliability_diagram
from fsgld_optax.bayes._temperature import posterior_beta as posterior_beta

__all__ = [
  "CalibrationBins",
  "CyclicalSchedule",
  "SampleBuffer",
  "SampleCollector",
  "add_sample",
  "average_predictions",
  "brier",
  "calibration_bins",
  "collected_samples",
  "cyclical_schedule",
  "ece",
  "effective_sample_size",
  "init_sample_buffer",
  "nll",
  "ood_aupr",
  "ood_auroc",
  "plot_reliability_diagram",
  "posterior_beta",
  "predictive_entropy",
  "rhat",
]
