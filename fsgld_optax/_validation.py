"""Argument checks shared by every public function: errors that name the argument.

Hyperparameters are checked when a transformation is built, where they are concrete. A value
that is traced (inside ``jit`` or ``optax.inject_hyperparams``) cannot be checked there and
passes through; a schedule's value is checked at every step where it is concrete.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import core as jax_core


def _is_tracer(value: Any) -> bool:
  return isinstance(value, jax_core.Tracer)


def real_scalar(value: Any, name: str) -> float | None:
  """``value`` as a Python float, ``None`` if it is traced; raises for anything not a real number.

  Accepts Python ints and floats and real scalar arrays of any floating or integer dtype
  (``bfloat16`` and ``float16`` included). Rejects ``None``, booleans, strings, callables,
  complex numbers and arrays with a shape, with a ``ValueError`` naming ``name``.
  """
  if _is_tracer(value):
    return None
  if value is None or isinstance(value, bool | np.bool_ | str | bytes) or callable(value):
    raise ValueError(f"{name} must be a real number, got {value!r}.")
  try:
    array = np.asarray(value)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None
  except (TypeError, ValueError) as error:
    raise ValueError(f"{name} must be a real number, got {value!r}.") from error
  dtype = array.dtype
  if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
    raise ValueError(f"{name} must be a real number, got {value!r} of dtype {dtype}.")
  if array.shape != ():
    raise ValueError(f"{name} must be a scalar, got an array of shape {array.shape}.")
  return float(array.astype(np.float64))


def check_scalar(
  name: str,
  value: Any,
  *,
  lower: float,
  inclusive: bool,
  allow_inf: bool = True,
  allow_schedule: bool = False,
) -> None:
  """Raises a ``ValueError`` naming ``name`` unless ``value`` is a number in range.

  The range is ``value >= lower`` (``inclusive``) or ``value > lower``; ``+inf`` only with
  ``allow_inf``. A finite value too large for the default float dtype (float32 unless
  ``jax_enable_x64``) is rejected, since it would overflow to inf inside the step. Schedules
  (callables) pass when ``allow_schedule``; their values are checked per step by
  :func:`check_schedule_value`. Traced values pass.
  """
  if allow_schedule and callable(value):
    return
  x = real_scalar(value, name)
  if x is None:
    return
  bound = f">= {lower}" if inclusive else f"> {lower}"
  if math.isnan(x) or (x < lower if inclusive else x <= lower):
    raise ValueError(f"{name} must be {bound}, got {x}.")
  if math.isinf(x):
    if not allow_inf:
      raise ValueError(f"{name} must be finite, got {x}.")
    return
  limit = float(jnp.finfo(jnp.result_type(float)).max)
  if abs(x) > limit:
    raise ValueError(
      f"{name}={x} overflows {jnp.dtype(jnp.result_type(float)).name} (largest {limit:.3g})."
    )


def check_schedule_value(
  name: str, schedule: Any, value: jax.Array, *, lower: float, inclusive: bool, allow_inf: bool
) -> None:
  """Checks a schedule's value at the current step where it is concrete (outside ``jit``)."""
  if callable(schedule) and not _is_tracer(value):
    check_scalar(
      f"{name} (schedule value)", value, lower=lower, inclusive=inclusive, allow_inf=allow_inf
    )


def check_int(name: str, value: Any, *, lower: int) -> None:
  """Raises a ``ValueError`` naming ``name`` unless ``value`` is a Python int ``>= lower``."""
  if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < lower:
    raise ValueError(f"{name} must be an int >= {lower}, got {value!r}.")


def check_fraction(name: str, value: Any, *, upper_inclusive: bool = False) -> None:
  """Raises a ``ValueError`` naming ``name`` unless ``0 <= value < 1`` (or ``<= 1``)."""
  check_scalar(name, value, lower=0.0, inclusive=True, allow_inf=False)
  x = real_scalar(value, name)
  if x is not None and (x > 1 or (x == 1 and not upper_inclusive)):
    raise ValueError(f"{name} must be in [0, 1{']' if upper_inclusive else ')'}, got {x}.")


def at(value: Any, count: jax.Array) -> jax.Array:
  """The value of a scalar or schedule at step ``count``, in the default float dtype."""
  return jnp.asarray(value(count) if callable(value) else value, dtype=jnp.result_type(float))


def concrete(value: Any) -> float | None:
  """``value`` as a float if it is a concrete real scalar; ``None`` for schedules and tracers."""
  if callable(value) or value is None:
    return None
  try:
    return real_scalar(value, "value")
  except ValueError:
    return None


def check_bool(name: str, value: Any) -> None:
  """Raises a ``ValueError`` naming ``name`` unless ``value`` is a ``bool`` (or NumPy bool)."""
  if not isinstance(value, bool | np.bool_):
    raise ValueError(f"{name} must be True or False, got {value!r}.")


def check_axis_name(name: str, value: Any) -> None:
  """Raises a ``ValueError`` naming ``name`` unless ``value`` is ``None`` or an axis name.

  An axis name is a ``str`` or another hashable object that is not a number or a bool; a
  tuple of axis names is accepted too.
  """
  if value is None:
    return
  for axis in value if isinstance(value, tuple) else (value,):
    number = isinstance(axis, bool | int | float | complex | np.number | np.bool_)
    if axis is None or number or type(axis).__hash__ is None:
      raise ValueError(f"{name} must be an axis name (a str) or a tuple of them, got {value!r}.")


def check_argnums(name: str, value: Any) -> None:
  """Raises a ``ValueError`` naming ``name`` unless ``value`` is ``None``, an int or ints."""
  if value is None:
    return
  items = value if isinstance(value, list | tuple) else (value,)
  if any(isinstance(i, bool) or not isinstance(i, int | np.integer) for i in items):
    raise ValueError(f"{name} must be None, an int or a sequence of ints, got {value!r}.")


def positive_array(name: str, value: Any, dtype: Any, *, allow_inf: bool) -> jax.Array:
  """``value`` as an array of ``dtype``; concrete entries must be > 0 and fit ``dtype``."""
  if _is_tracer(value):
    return jnp.asarray(value, dtype)
  if value is None or isinstance(value, bool | np.bool_ | str | bytes) or callable(value):
    raise ValueError(f"{name} must be a positive real number or array, got {value!r}.")
  try:
    array = np.asarray(value)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return jnp.asarray(value, dtype)
  except (TypeError, ValueError) as error:
    raise ValueError(f"{name} must be a positive real number or array, got {value!r}.") from error
  if not (jnp.issubdtype(array.dtype, jnp.floating) or jnp.issubdtype(array.dtype, jnp.integer)):
    raise ValueError(f"{name} must be real, got dtype {array.dtype}.")
  values = array.astype(np.float64)
  if np.any(np.isnan(values)) or np.any(values <= 0):
    raise ValueError(f"{name} must be > 0 everywhere, got {value!r}.")
  if not allow_inf and np.any(np.isinf(values)):
    raise ValueError(f"{name} must be finite, got {value!r}.")
  limit = float(jnp.finfo(dtype).max)
  if np.any(np.isfinite(values) & (values > limit)):
    raise ValueError(f"{name}={value!r} overflows {jnp.dtype(dtype).name} (largest {limit:.3g}).")
  return jnp.asarray(array.astype(dtype))
