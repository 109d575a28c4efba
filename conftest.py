"""Test configuration shared by tests/, doctests and notebooks.

Eight CPU devices are forced before any backend starts, so multi-device tests run in the
same process as the rest; single-device code keeps using device 0. Notebooks run in quick
mode.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# Notebooks executed by the test run (nbmake kernels inherit this) use small step counts.
os.environ.setdefault("FSGLD_NOTEBOOK_QUICK", "1")

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
