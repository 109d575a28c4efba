"""Sample collection: the on-device ring buffer and the host/disk collector, and resuming."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import fsgld_optax
from fsgld_optax import bayes

# ------------------------------------------------------------------------------ ring buffer


def test_buffer_keeps_the_last_capacity_samples_in_order() -> None:
  like = {"a": jnp.zeros(2), "b": jnp.zeros((), jnp.int32)}
  buffer = bayes.init_sample_buffer(like, capacity=3)
  add = jax.jit(bayes.add_sample)
  added = []
  for k in range(10):
    sample = {"a": jnp.full(2, float(k)), "b": jnp.asarray(k, jnp.int32)}
    when = k % 2 == 1
    buffer = add(buffer, sample, when=when)
    if when:
      added.append(k)
    collected = bayes.collected_samples(buffer)
    kept = added[-3:]
    assert int(buffer.count) == len(added)
    np.testing.assert_array_equal(collected["b"], kept)
    np.testing.assert_array_equal(
      collected["a"], np.repeat(np.asarray(kept, np.float32)[:, None], 2, 1)
    )


def test_buffer_add_is_a_no_op_when_not_collecting() -> None:
  buffer = bayes.init_sample_buffer(jnp.zeros(3), capacity=2)
  same = bayes.add_sample(buffer, jnp.ones(3), when=False)
  jax.tree.map(np.testing.assert_array_equal, same, buffer)
  assert bayes.collected_samples(same).shape == (0, 3)


def test_buffer_accepts_shape_dtype_structs_and_keeps_dtypes() -> None:
  like = {"w": jax.ShapeDtypeStruct((2, 2), jnp.bfloat16)}
  buffer = bayes.init_sample_buffer(like, capacity=4)
  assert buffer.samples["w"].shape == (4, 2, 2) and buffer.samples["w"].dtype == jnp.bfloat16


def test_buffer_errors() -> None:
  for capacity in (0, 2.0, True):
    with pytest.raises(ValueError, match="capacity must be an int >= 1"):
      bayes.init_sample_buffer(jnp.zeros(2), capacity=capacity)  # pyright: ignore[reportArgumentType]
  buffer = bayes.init_sample_buffer({"w": jnp.zeros(2)}, capacity=2)
  with pytest.raises(ValueError, match="structure of the buffer's samples"):
    bayes.add_sample(buffer, {"v": jnp.zeros(2)})
  with pytest.raises(ValueError, match=r"shape \(3,\) does not fit the buffer's \(2,\)"):
    bayes.add_sample(buffer, {"w": jnp.zeros(3)})


# ------------------------------------------------------------------------------ host / disk


@pytest.mark.parametrize("on_disk", [False, True])
def test_collector_stores_loads_replaces_and_discards(tmp_path: Path, on_disk: bool) -> None:
  collector = bayes.SampleCollector(tmp_path / "samples" if on_disk else None)
  for step in (7, 3, 11):
    collector.add({"w": jnp.full(2, float(step)), "s": {"n": jnp.arange(3)}}, step=step)
  assert collector.steps == (3, 7, 11) and len(collector) == 3
  assert [float(s["w"][0]) for s in collector] == [3.0, 7.0, 11.0]
  sample = collector.load(7)
  assert isinstance(sample["w"], np.ndarray) and sample["s"]["n"].dtype == np.int32
  collector.add({"w": jnp.full(2, -1.0), "s": {"n": jnp.arange(3)}}, step=7)  # replaces
  assert float(collector[1]["w"][0]) == -1.0 and len(collector) == 3
  collector.discard_from(7)
  assert collector.steps == (3,)
  with pytest.raises(KeyError, match="no sample for step 7"):
    collector.load(7)
  with pytest.raises(ValueError, match="step must be an int >= 0"):
    collector.add({"w": jnp.zeros(2)}, step=-1)
  collector.close()
  if on_disk:  # a new collector on the same folder finds the samples
    again = bayes.SampleCollector(tmp_path / "samples")
    assert again.steps == (3,)
    np.testing.assert_array_equal(again[0]["w"], [3.0, 3.0])
    again.close()


# ------------------------------------------------------------------------------ resuming


TOTAL, CYCLES, SAMPLES_PER_CYCLE = 48, 3, 2


def _setup():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(64, 3)), jnp.float32)
  y = jnp.asarray(x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=64), jnp.float32)
  schedule = bayes.cyclical_schedule(
    0.05, TOTAL, CYCLES, beta=bayes.posterior_beta(64), samples_per_cycle=SAMPLES_PER_CYCLE
  )
  tx = fsgld_optax.fsgld(schedule.learning_rate, schedule.beta, key=7)
  grad_fn = fsgld_optax.perturbed_value_and_grad(lambda w, xb, yb: jnp.mean((xb @ w - yb) ** 2))

  @jax.jit
  def step(w, opt_state, buffer, k):
    xb, yb = (
      jax.lax.dynamic_slice_in_dim(x, (k % 4) * 16, 16),
      jax.lax.dynamic_slice_in_dim(y, (k % 4) * 16, 16),
    )
    _, grads = grad_fn(w, opt_state, xb, yb)
    updates, opt_state = tx.update(grads, opt_state, w)
    w = optax.apply_updates(w, updates)
    return w, opt_state, bayes.add_sample(buffer, w, when=schedule.should_collect(k))

  w = jnp.zeros(3)
  return schedule, step, {"w": w, "opt_state": tx.init(w), "buffer": bayes.init_sample_buffer(w, 6)}


def _run(step, schedule, state, start, stop, collector=None):
  w, opt_state, buffer = state["w"], state["opt_state"], state["buffer"]
  for k in range(start, stop):
    w, opt_state, buffer = step(w, opt_state, buffer, k)
    if collector is not None and schedule.should_collect(k):
      collector.add(w, step=k)
  return {"w": w, "opt_state": opt_state, "buffer": buffer}


def test_collection_is_deterministic_and_survives_a_checkpoint_and_restart(tmp_path: Path) -> None:
  schedule, step, state0 = _setup()
  # The uninterrupted run, collecting on the device and in host memory.
  memory = bayes.SampleCollector()
  final = _run(step, schedule, state0, 0, TOTAL, memory)
  samples = bayes.collected_samples(final["buffer"])
  assert samples.shape == (CYCLES * SAMPLES_PER_CYCLE, 3) == (len(memory), 3)
  np.testing.assert_array_equal(samples, np.stack(list(memory)))
  assert memory.steps == tuple(k for k in range(TOTAL) if schedule.should_collect(k))
  # A second run is identical, bitwise.
  again = _run(step, schedule, state0, 0, TOTAL)
  np.testing.assert_array_equal(bayes.collected_samples(again["buffer"]), samples)

  # Interrupted: checkpoint after 20 steps (one sample collected so far on each side), crash
  # at step 37 after writing later samples to disk, restart from the checkpoint.
  disk = bayes.SampleCollector(tmp_path / "samples")
  middle = _run(step, schedule, state0, 0, 20, disk)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / "checkpoint", middle)
  checkpointer.wait_until_finished()
  _run(step, schedule, middle, 20, 37, disk)  # the lost work
  del middle, disk

  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state0)
  restored = checkpointer.restore(tmp_path / "checkpoint", target)
  checkpointer.close()
  disk = bayes.SampleCollector(tmp_path / "samples")
  disk.discard_from(20)
  assert disk.steps == tuple(k for k in range(20) if schedule.should_collect(k))
  resumed = _run(step, schedule, restored, 20, TOTAL, disk)
  np.testing.assert_array_equal(bayes.collected_samples(resumed["buffer"]), samples)
  np.testing.assert_array_equal(resumed["buffer"].count, final["buffer"].count)
  assert disk.steps == memory.steps
  for a, b in zip(disk, memory, strict=True):
    np.testing.assert_array_equal(a, b)
  disk.close()
