"""Flax glue for fSGLD: perturbed gradients for NNX modules and a Linen train step.

Importing this subpackage needs ``flax`` (``pip install fsgld-optax[flax]``); the top-level
``fsgld_optax`` package does not import it.

- :func:`nnx_value_and_grad`: the NNX counterpart of
  :func:`fsgld_optax.perturbed_value_and_grad`; perturbs only ``nnx.Param`` variables, works
  with ``nnx.Optimizer(model, fsgld_optax.fsgld(...), wrt=nnx.Param)`` and writes the
  combined BatchNorm statistics back to the model.
- :class:`TrainState` and :func:`linen_train_step`: a Linen ``TrainState`` with a
  ``batch_stats`` collection and a train step that perturbs ``params`` only and carries the
  BatchNorm statistics through the perturbations.

Over n perturbations, BatchNorm running statistics are combined by averaging the n updated
values, which equals one running-average update with the mean batch statistics.
"""

from fsgld_optax.flax._linen import TrainState as TrainState
from fsgld_optax.flax._linen import linen_train_step as linen_train_step
from fsgld_optax.flax._nnx import nnx_value_and_grad as nnx_value_and_grad

__all__ = [
  "TrainState",
  "linen_train_step",
  "nnx_value_and_grad",
]
