"""Tests for the training CLI: optimizers, schedule, checkpoints and bitwise resume."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

import fsgld_optax
from benchmarks import data
from benchmarks.optimizers import OPTIMIZERS, make_optimizer, paper_schedule
from benchmarks.train import TrainConfig, config_from_args, main, train

TINY = TrainConfig(
  dataset="digits",
  noise="symmetric:0.4",
  epochs=3,
  batch_size=64,
  max_steps_per_epoch=4,
  lr=0.1,
  beta=1e6,
  progress=False,
)


def run(config: TrainConfig, dataset: data.Dataset | None = None) -> tuple[list, list]:
  """Trains and returns the history and the train state after each epoch of this call."""
  states: list[Any] = []
  history = train(config, dataset=dataset, callback=lambda _, state: states.append(state))
  return history, states


def without_timing(history: list[dict]) -> list[dict]:
  return [{k: v for k, v in h.items() if k != "sec_per_step"} for h in history]


def digits_as_signals() -> data.Dataset:
  """Digits shaped (N, 64, 1), for the 1-D CNN (which has BatchNorm)."""
  ds = data.load_digits(noise="symmetric:0.4", seed=0)
  return dataclasses.replace(
    ds, x_train=ds.x_train[..., None], x_test=ds.x_test[..., None], name="digits1d"
  )


@pytest.mark.parametrize(
  ("optimizer", "model"),
  [("fsgld", None), ("sam", "cnn1d")],  # typed key in FSGLDState; SAMState with None, BatchNorm
)
def test_resume_is_bitwise_identical(tmp_path: Path, optimizer: str, model: str | None) -> None:
  config = dataclasses.replace(TINY, optimizer=optimizer, model=model)
  dataset = digits_as_signals() if model == "cnn1d" else None
  straight, straight_states = run(dataclasses.replace(config, out=str(tmp_path / "a")), dataset)

  out = str(tmp_path / "b")
  first, _ = run(dataclasses.replace(config, out=out, stop_after=2), dataset)
  assert len(first) == 2
  resumed, resumed_states = run(dataclasses.replace(config, out=out, resume=True), dataset)
  assert len(resumed_states) == 1  # Only the third epoch was trained again.
  assert without_timing(resumed) == without_timing(straight)
  jax.tree.map(
    np.testing.assert_array_equal,
    jax.tree.map(_key_data, straight_states[-1], is_leaf=_is_key),
    jax.tree.map(_key_data, resumed_states[-1], is_leaf=_is_key),
  )
  saved = json.loads((Path(out) / "history.json").read_text())
  assert without_timing(saved) == without_timing(straight)


def _is_key(x: Any) -> bool:
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _key_data(x: Any) -> Any:
  return jax.random.key_data(x) if _is_key(x) else x


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
  config = dataclasses.replace(TINY, epochs=2, stop_after=1, out=str(tmp_path))
  train(config)
  with pytest.raises(ValueError, match=r"lr: 0\.1 -> 0\.2"):
    train(dataclasses.replace(config, lr=0.2, resume=True))
  with pytest.raises(ValueError, match="already holds checkpoints"):
    train(config)


def test_every_optimizer_trains() -> None:
  finals = {}
  for name in OPTIMIZERS:
    config = dataclasses.replace(
      TINY, optimizer=name, epochs=1, max_steps_per_epoch=3, sigma=0.01 if name == "rwp" else None
    )
    (record,), (state,) = run(config)
    assert math.isfinite(record["train_loss"]) and 0.0 <= record["test_acc"] <= 1.0
    assert int(state.step) == 3
    finals[name] = jax.tree.leaves(state.params)[0]
  # Same initialisation and batches: the optimizers must still take different steps.
  for name in OPTIMIZERS[1:]:
    assert not np.array_equal(finals[name], finals["sgd"]), name


def test_split_batch_and_perturbation_batch_size() -> None:
  split = dataclasses.replace(
    TINY, epochs=1, max_steps_per_epoch=2, n_perturbations=2, split_batch=True
  )
  _, (vmapped,) = run(split)
  _, (one_by_one,) = run(dataclasses.replace(split, perturbation_batch_size=1))
  _, (whole_batch,) = run(dataclasses.replace(split, split_batch=False))
  # Evaluating the perturbations one at a time changes only the float rounding; giving each
  # perturbation its own half of the batch changes the gradient.
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
    vmapped.params,
    one_by_one.params,
  )
  differs = jax.tree.map(
    lambda a, b: not np.allclose(a, b, rtol=1e-3), vmapped.params, whole_batch.params
  )
  assert any(jax.tree.leaves(differs))
  with pytest.raises(ValueError, match="divisible by n_perturbations"):
    dataclasses.replace(split, batch_size=63)
  with pytest.raises(ValueError, match="perturbation_batch_size must divide"):
    dataclasses.replace(split, perturbation_batch_size=3)


def test_fsgld_optimizer_is_the_library_transformation() -> None:
  optimizer = make_optimizer("fsgld", learning_rate=0.1, total_steps=9, key=3, beta=1e8)
  state = optimizer.tx.init({"w": np.zeros(2, np.float32)})
  np.testing.assert_allclose(
    fsgld_optax.find_fsgld_state(state).sigma, fsgld_optax.coupled_sigma(1e8, 0.1)
  )
  assert optimizer.gradient == "perturbed"
  rwp = make_optimizer("rwp", learning_rate=0.1, total_steps=9, key=3, sigma=0.02)
  assert float(fsgld_optax.find_fsgld_state(rwp.tx.init(np.zeros(2))).sigma) == pytest.approx(0.02)
  with pytest.raises(ValueError, match="sigma"):
    make_optimizer("rwp", learning_rate=0.1, total_steps=9, key=3)


@pytest.mark.parametrize(
  ("total", "expected"),
  [(150, {0: 1.0, 49: 1.0, 50: 0.1, 99: 0.1, 100: 0.01}), (2, {0: 1.0, 1: 0.01})],
)
def test_paper_schedule(total: int, expected: dict[int, float]) -> None:
  schedule = paper_schedule(1.0, total)
  for step, value in expected.items():
    assert float(schedule(step)) == pytest.approx(value), step


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
  argv = [
    *("--dataset", "digits", "--noise", "pairflip:0.2", "--optimizer", "fsgld"),
    *("--epochs", "1", "--batch-size", "64", "--max-steps-per-epoch", "2", "--beta", "inf"),
    *("--sigma", "0.01", "--n-perturbations", "2", "--out", str(tmp_path), "--no-progress"),
    *("--perturbation", "rademacher", "--langevin-noise", "binomial"),
    *("--split-batch", "--perturbation-batch-size", "1"),
  ]
  config = config_from_args(argv)
  assert config.beta == math.inf and config.n_perturbations == 2 and not config.progress
  assert config.split_batch and config.perturbation_batch_size == 1
  assert (config.perturbation, config.langevin_noise) == ("rademacher", "binomial")
  history = main(argv)
  assert "test accuracy" in capsys.readouterr().out
  assert json.loads((tmp_path / "history.json").read_text())[0]["epoch"] == 1 == len(history)
  assert TrainConfig.from_json(json.loads((tmp_path / "config.json").read_text())) == config
