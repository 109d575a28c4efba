"""Flax glue for fSGLD: perturbed gradients for NNX modules and a Linen train step.

Importing this subpackage needs ``flax`` (``pip install fsgld-optax[flax]``); the top-level
``fsgld_optax`` package does not import it.

- :func:`nnx_value_and_grad`: the NNX counterpart of
  :func:`fsgld_optax.perturbed_value_and_grad`; perturbs only ``nnx.Param`` variables, works
  with ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` for any ``tx`` holding a source of
  perturbations (``fsgld_optax.fsgld(...)``, ``optax.chain(fsgld_optax.rwp(...),
  optax.adamw(...))``, ...), accepts graph-node arguments such as ``nnx.Rngs`` as
  ``nnx.value_and_grad`` does, and writes the combined BatchNorm statistics and RNG counters
  back.
- :class:`TrainState` and :func:`linen_train_step`: a Linen ``TrainState`` with a
  ``batch_stats`` collection, and a train step for it or for Flax's own
  ``flax.training.train_state.TrainState`` (models without BatchNorm) that perturbs
  ``params`` only and carries the BatchNorm statistics through the perturbations.

Both helpers take ``split_batch``, ``batch_argnums`` and ``aux_reduction`` as
:func:`fsgld_optax.perturbed_value_and_grad` does. Over n perturbations, BatchNorm running
statistics are combined by averaging the n updated values, which equals one running-average
update with the mean batch statistics; under ``split_batch`` each perturbation normalises with
the statistics of its own slice of the batch. Their docstrings say what happens to dropout,
antithetic pairs and ``perturbation_batch_size`` there.
"""

from fsgld_optax.flax._linen import TrainState as TrainState
from fsgld_optax.flax._linen import linen_train_step as linen_train_step
from fsgld_optax.flax._nnx import nnx_value_and_grad as nnx_value_and_grad

__all__ = [
  "TrainState",
  "linen_train_step",
  "nnx_value_and_grad",
]
