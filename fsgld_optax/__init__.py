"""fsgld_optax: Flatness-Aware Stochastic Gradient Langevin Dynamics for JAX and Optax.

fSGLD takes each stochastic gradient at randomly perturbed weights θ + ε, ε ~ N(0, σ² I),
and then makes a Langevin step θ ← θ − λ g + sqrt(2λ/β) ξ, with σ = β^{-(1+η)/4}.
See Bruno et al., *Flatness-Aware Stochastic Gradient Langevin Dynamics*, ICML 2026,
https://arxiv.org/abs/2510.02174.

Submodules: :mod:`fsgld_optax.diagnostics` (Hessian trace, eigenvalues, spectral density,
loss-landscape slices) and :mod:`fsgld_optax.flax` (Flax NNX and Linen training steps; needs
``flax``).
"""

from importlib import metadata as _metadata

from fsgld_optax import bayes as bayes
from fsgld_optax import diagnostics as diagnostics
from fsgld_optax._fsghmc import fsghmc as fsghmc
from fsgld_optax._fsghmc import sghmc as sghmc
from fsgld_optax._fsgld import coupled_sigma as coupled_sigma
from fsgld_optax._fsgld import fsgld as fsgld
from fsgld_optax._fsgld import sgld as sgld
from fsgld_optax._langevin import LangevinState as LangevinState
from fsgld_optax._langevin import add_langevin_noise as add_langevin_noise
from fsgld_optax._perturb import perturbed_value_and_grad as perturbed_value_and_grad
from fsgld_optax._precision import lost_update_fraction as lost_update_fraction
from fsgld_optax._precision import with_compute_dtype as with_compute_dtype
from fsgld_optax._psgld import PreconditionedLangevinState as PreconditionedLangevinState
from fsgld_optax._psgld import preconditioned_fsgld as preconditioned_fsgld
from fsgld_optax._psgld import psgld as psgld
from fsgld_optax._psgld import scale_by_rms_langevin as scale_by_rms_langevin
from fsgld_optax._sampling import cyclical_cosine_schedule as cyclical_cosine_schedule
from fsgld_optax._sampling import sample as sample
from fsgld_optax._source import FSGLDState as FSGLDState
from fsgld_optax._source import find_fsgld_state as find_fsgld_state
from fsgld_optax._source import rwp as rwp

try:
  __version__ = _metadata.version("fsgld-optax")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
  __version__ = "0.0.0"

__all__ = [
  "FSGLDState",
  "LangevinState",
  "PreconditionedLangevinState",
  "add_langevin_noise",
  "bayes",
  "coupled_sigma",
  "cyclical_cosine_schedule",
  "diagnostics",
  "find_fsgld_state",
  "fsghmc",
  "fsgld",
  "lost_update_fraction",
  "perturbed_value_and_grad",
  "preconditioned_fsgld",
  "psgld",
  "rwp",
  "sample",
  "scale_by_rms_langevin",
  "sghmc",
  "sgld",
  "with_compute_dtype",
]
