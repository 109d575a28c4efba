"""Collecting samples from a minibatch training loop: on the device, in host memory, on disk.

Two collectors, for two sizes of model:

* :class:`SampleBuffer` (with :func:`init_sample_buffer`, :func:`add_sample`,
  :func:`collected_samples`): a fixed-size ring buffer of pytrees on the device, a pytree
  itself, so it lives inside a jitted train step and is checkpointed with the train state.
* :class:`SampleCollector`: samples copied off the device as they come, into host memory or,
  given a directory, onto disk with ``orbax.checkpoint`` (one sample in memory at a time),
  for models too big to keep many copies of on the device.

Both are deterministic: the samples are the states of the chain at the chosen steps, so a
run resumed from a checkpoint collects the same samples, bitwise, as an uninterrupted one.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class SampleBuffer(NamedTuple):
  """A fixed-size ring buffer of samples on the device (see :func:`init_sample_buffer`).

  Attributes:
    samples: the sample pytree with a leading axis of size ``capacity`` on every leaf;
      slot ``i % capacity`` holds the ``i``-th sample added.
    count: ``int32[]``, the number of samples added so far (it may exceed ``capacity``,
      in which case the oldest samples have been overwritten).
  """

  samples: Any
  count: jax.Array


def init_sample_buffer(like: Any, capacity: int) -> SampleBuffer:
  """An empty :class:`SampleBuffer` for samples shaped like ``like``.

  Args:
    like: a pytree of arrays (e.g. the parameters, or ``{"params": ..., "batch_stats":
      ...}``), or of ``jax.ShapeDtypeStruct``; only shapes and dtypes are used.
    capacity: the number of samples kept, ≥ 1; the buffer takes ``capacity`` times the
      memory of one sample.

  Returns:
    A :class:`SampleBuffer` of zeros with ``count = 0``.

  Raises:
    ValueError: if ``capacity`` is not an int ≥ 1.

  Examples:
    >>> import jax.numpy as jnp
    >>> from fsgld_optax import bayes
    >>> buffer = bayes.init_sample_buffer({"w": jnp.zeros(3)}, capacity=4)
    >>> print(buffer.samples["w"].shape, buffer.count)
    (4, 3) 0
  """
  if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
    raise ValueError(f"capacity must be an int >= 1, got {capacity!r}.")
  samples = jax.tree.map(lambda x: jnp.zeros((capacity, *np.shape(x)), x.dtype), like)
  return SampleBuffer(samples=samples, count=jnp.zeros([], jnp.int32))


def add_sample(
  buffer: SampleBuffer, sample: Any, *, when: jax.typing.ArrayLike = True
) -> SampleBuffer:
  """Writes ``sample`` into the next slot of the ring buffer if ``when``; jit-able.

  Only the one slot is written (``dynamic_update_slice``), so under ``jit`` with the buffer
  donated the cost is that of copying one sample, whatever the capacity. When the buffer is
  full the oldest sample is overwritten.

  Args:
    buffer: a :class:`SampleBuffer`.
    sample: a pytree with the structure, shapes and dtypes of one sample.
    when: a boolean scalar (e.g. ``schedule.should_collect(k)``); ``False`` leaves the
      buffer unchanged.

  Returns:
    The updated :class:`SampleBuffer`.

  Raises:
    ValueError: if ``sample`` does not match the buffer's structure or shapes.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from fsgld_optax import bayes
    >>> buffer = bayes.init_sample_buffer(jnp.zeros(2), capacity=2)
    >>> add = jax.jit(bayes.add_sample)
    >>> for k in range(5):
    ...   buffer = add(buffer, jnp.full(2, float(k)), when=k % 2 == 0)
    >>> print(buffer.count, bayes.collected_samples(buffer)[:, 0])
    3 [2. 4.]
  """
  if jax.tree.structure(sample) != jax.tree.structure(buffer.samples):
    raise ValueError(
      "sample must have the structure of the buffer's samples:\n"
      f"  sample: {jax.tree.structure(sample)}\n  buffer: {jax.tree.structure(buffer.samples)}"
    )
  for slot, leaf in zip(jax.tree.leaves(buffer.samples), jax.tree.leaves(sample), strict=True):
    if slot.shape[1:] != np.shape(leaf):
      raise ValueError(
        f"sample leaf of shape {np.shape(leaf)} does not fit the buffer's {slot.shape[1:]}."
      )
  when = jnp.asarray(when, bool)
  capacity = jax.tree.leaves(buffer.samples)[0].shape[0]
  index = jnp.mod(buffer.count, capacity)

  def write(slots: jax.Array, x: Any) -> jax.Array:
    new = jnp.where(when, jnp.asarray(x, slots.dtype), slots[index])
    return jax.lax.dynamic_update_index_in_dim(slots, new, index, axis=0)

  samples = jax.tree.map(write, buffer.samples, sample)
  return SampleBuffer(samples=samples, count=buffer.count + when.astype(jnp.int32))


def collected_samples(buffer: SampleBuffer) -> Any:
  """The samples in a :class:`SampleBuffer`, oldest first, stacked on a leading axis.

  Reads the count, so call it outside ``jit``. Returns ``min(count, capacity)`` samples.

  Args:
    buffer: a :class:`SampleBuffer`.

  Returns:
    The pytree of stacked samples.
  """
  count = int(buffer.count)
  capacity = jax.tree.leaves(buffer.samples)[0].shape[0]
  if count <= capacity:
    return jax.tree.map(lambda x: x[:count], buffer.samples)
  start = count % capacity
  return jax.tree.map(lambda x: jnp.roll(x, -start, axis=0), buffer.samples)


_NAME = re.compile(r"^sample_(\d+)$")


class SampleCollector:
  """Samples kept off the device: in host memory, or on disk with ``orbax.checkpoint``.

  Each sample is stored under the index ``step`` of the step that produced it (the state
  *after* step ``step``), copied to NumPy arrays on the host as it is added. With a
  ``directory``, each sample is written with ``orbax.checkpoint.StandardCheckpointer`` into
  ``directory/sample_<step>`` (atomically: an interrupted write leaves no sample) and read
  back one at a time, so memory holds one sample at a time; a new collector on the same
  directory finds the samples written before (resuming after a restart). Adding a step that
  is already there replaces it. After restoring a training checkpoint taken after ``C``
  steps, :meth:`discard_from` ``(C)`` drops samples a crashed run wrote later.

  Iterating over the collector yields the samples in step order, loading each when it is
  needed, which is what :func:`average_predictions` consumes.

  Args:
    directory: a folder for the samples (created if missing), or ``None`` to keep them in
      host memory. Needs ``orbax-checkpoint`` (``pip install fsgld-optax[checkpoint]``).

  Examples:
    >>> import jax.numpy as jnp
    >>> from fsgld_optax import bayes
    >>> collector = bayes.SampleCollector()
    >>> collector.add({"w": jnp.ones(2)}, step=9)
    >>> collector.add({"w": jnp.zeros(2)}, step=19)
    >>> print(collector.steps, collector[0]["w"])
    (9, 19) [1. 1.]
  """

  def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
    self._memory: dict[int, Any] = {}
    self._directory = None if directory is None else Path(directory).absolute()
    self._checkpointer: Any = None
    if self._directory is not None:
      self._directory.mkdir(parents=True, exist_ok=True)

  def _orbax(self) -> Any:
    if self._checkpointer is None:
      import orbax.checkpoint as ocp

      self._checkpointer = ocp.StandardCheckpointer()
    return self._checkpointer

  @property
  def directory(self) -> Path | None:
    """The folder the samples are written to, or ``None`` for host memory."""
    return self._directory

  @property
  def steps(self) -> tuple[int, ...]:
    """The steps of the stored samples, in increasing order."""
    if self._directory is None:
      return tuple(sorted(self._memory))
    found = (_NAME.match(p.name) for p in self._directory.iterdir() if p.is_dir())
    return tuple(sorted(int(m.group(1)) for m in found if m))

  def _path(self, step: int) -> Path:
    assert self._directory is not None
    return self._directory / f"sample_{step}"

  def add(self, sample: Any, *, step: int) -> None:
    """Stores a copy of ``sample`` (moved to the host) under ``step``, replacing any there.

    Args:
      sample: a pytree of arrays.
      step: a non-negative int, the index of the step that produced the sample.

    Raises:
      ValueError: for a negative or non-int ``step``.
    """
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
      raise ValueError(f"step must be an int >= 0, got {step!r}.")
    step = int(step)
    host = jax.device_get(sample)
    if self._directory is None:
      self._memory[step] = jax.tree.map(np.array, host)
      return
    self._orbax().save(self._path(step), host, force=True)
    self._orbax().wait_until_finished()

  def load(self, step: int) -> Any:
    """The sample stored under ``step``, as NumPy arrays.

    Raises:
      KeyError: if there is no sample for ``step``.
    """
    if self._directory is None:
      if step not in self._memory:
        raise KeyError(f"no sample for step {step}; stored steps: {self.steps}")
      return self._memory[step]
    path = self._path(step)
    if not path.is_dir():
      raise KeyError(f"no sample for step {step} in {self._directory}; stored: {self.steps}")
    return jax.device_get(self._orbax().restore(path))

  def discard_from(self, step: int) -> None:
    """Deletes the samples of steps ``>= step`` (e.g. after resuming from step ``step``)."""
    for s in self.steps:
      if s >= step:
        if self._directory is None:
          del self._memory[s]
        else:
          shutil.rmtree(self._path(s))

  def __len__(self) -> int:
    return len(self.steps)

  def __getitem__(self, index: int) -> Any:
    return self.load(self.steps[index])

  def __iter__(self) -> Iterator[Any]:
    for step in self.steps:
      yield self.load(step)

  def close(self) -> None:
    """Releases the orbax checkpointer (a no-op in memory); the collector stays usable."""
    if self._checkpointer is not None:
      self._checkpointer.close()
      self._checkpointer = None
