"""Test helpers for optimizer states built from the family's pieces."""

from typing import Any

import jax
import jax.numpy as jnp


def _counted(x: Any) -> bool:
  # Not hasattr(x, "count"): every tuple has a count method.
  return hasattr(x, "_replace") and "count" in getattr(x, "_fields", ())


def at_step(state: Any, count: int) -> Any:
  """``state`` with every step counter in it (source, noise, schedules) at ``count``."""
  return jax.tree.map(
    lambda s: s._replace(count=jnp.asarray(count, jnp.int32)) if _counted(s) else s,
    state,
    is_leaf=_counted,
  )
