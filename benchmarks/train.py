"""Train a classifier on noisy labels with fSGLD or a baseline, with checkpoints and resume.

Command line::

    python -m benchmarks.train --dataset mnist1d --noise symmetric:0.4 --optimizer fsgld \\
        --epochs 30 --seed 0 --out runs/mnist1d_fsgld
    python -m benchmarks.train ... --out runs/mnist1d_fsgld --resume   # after an interruption

From Python, :func:`train` takes a :class:`TrainConfig` and returns the per-epoch history::

    from benchmarks.train import TrainConfig, train
    history = train(TrainConfig(dataset="digits", optimizer="sgd", epochs=5))

Datasets: ``mnist1d`` (1-D CNN), ``digits`` (MLP), ``cifar10n`` / ``cifar100n`` (ResNet-34,
from files under ``--data-dir``, with the paper's crop-and-flip augmentation). Synthetic label
noise (``--noise symmetric:0.4``, ``pairflip:0.2``) applies to ``mnist1d`` and ``digits``; for
CIFAR-N, ``--label-set`` picks the human labels (``aggre``, ``worst``, ``noisy100``...).
Optimizers: see :mod:`benchmarks.optimizers` (``sgd``, ``sam``, ``sgld``, ``rwp``, ``fsgld``,
``fsghmc``), all with the paper's schedule (learning rate ×0.1 at 1/3 and 2/3 of training).

Metrics recorded after every epoch (``history.json`` in ``--out``):

- ``train_loss``: mean cross-entropy of the epoch's steps on the (noisy) training labels,
  as seen by the optimizer (at perturbed weights for ``rwp``/``fsgld``);
- ``test_acc``: accuracy on the clean test labels;
- ``noisy_train_acc`` / ``clean_train_acc``: accuracy on the training inputs against the
  noisy labels (memorisation of the noise) and against the clean ones;
- ``val_acc`` / ``val_clean_acc`` with ``--val-fraction``: accuracy on a validation split
  carved from the training set, against its noisy and its clean labels;
- ``sec_per_step``: wall-clock seconds per training step in this epoch (compilation
  excluded, data feeding included); ``lr``: the learning rate of the epoch's last step.

Checkpoints and resume: after every epoch the train state (parameters, BatchNorm statistics,
optimizer state including the typed PRNG key of fSGLD/SGLD, step) and the history are saved
with ``orbax.checkpoint.CheckpointManager`` under ``--out/checkpoints`` (the last two kept).
``--resume`` restores the latest checkpoint and continues. Everything random is a function of
``--seed`` and the step or epoch: the batch order of epoch ``e`` comes from ``(seed, e)``,
the augmentation of step ``k`` from ``(seed, k)``, the optimizer noise from its state. So an
interrupted run resumed with the same arguments ends bitwise identical to an uninterrupted
one (on the same machine and software). ``--stop-after E`` ends a run after ``E`` epochs as
if interrupted, keeping the schedule of ``--epochs``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

import fsgld_optax
import fsgld_optax.flax
from benchmarks import data, models
from benchmarks.optimizers import OPTIMIZERS, PERTURBED, Optimizer, make_optimizer

__all__ = [
  "TrainConfig",
  "build",
  "build_parser",
  "config_from_args",
  "main",
  "predictions",
  "train",
]

DATASETS = ("mnist1d", "digits", "cifar10n", "cifar100n")
_DEFAULT_MODELS = {
  "mnist1d": "cnn1d",
  "digits": "mlp",
  "cifar10n": "resnet34",
  "cifar100n": "resnet34",
}

# Streams folded into the seed's key.
_INIT_STREAM, _OPTIMIZER_STREAM, _ORDER_STREAM, _AUGMENT_STREAM = 0, 1, 2, 3

# Fields that may differ between an interrupted run and its resumption.
_RESUMABLE_FIELDS = ("resume", "stop_after", "progress", "out")

Perturbation = Literal["gaussian", "rademacher"]
LangevinNoise = Literal["gaussian", "binomial"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything that defines a training run (the command-line flags of :func:`main`).

  Attributes:
    dataset: ``"mnist1d"``, ``"digits"``, ``"cifar10n"`` or ``"cifar100n"``.
    noise: synthetic label noise for ``mnist1d``/``digits``, e.g. ``"symmetric:0.4"``.
    label_set: CIFAR-N training labels (default ``aggre`` / ``noisy100``).
    data_dir: directory with the CIFAR files (CIFAR-N only).
    model: a :func:`benchmarks.models.create_model` name; by default ``cnn1d`` for
      MNIST-1D, ``mlp`` for digits, ``resnet34`` for CIFAR-N.
    width: channels of the first ResNet stage (default 64).
    optimizer: one of :data:`benchmarks.optimizers.OPTIMIZERS`.
    epochs: number of epochs; sets the learning-rate schedule.
    batch_size: examples per step (the last partial batch of an epoch is dropped).
    lr: initial learning rate.
    beta: inverse temperature β (``sgld``, ``fsgld``).
    sigma: perturbation scale σ (``rwp``; ``fsgld``, where ``None`` couples it to β).
    eta: coupling exponent η.
    rho: SAM radius ρ.
    momentum: heavy-ball momentum of ``sgd``, SAM's outer step, ``rwp`` and ``fsghmc``
      (``None``: 0, and 0.9 for ``fsghmc``).
    weight_decay: L2 coefficient added to the gradient.
    n_perturbations: perturbations per step (``rwp``, ``fsgld``).
    split_batch: give each perturbation its own ``1/n`` slice of the batch (one gradient's
      cost per step); ``batch_size`` must divide by ``n_perturbations``.
    perturbation_batch_size: perturbations evaluated at once (``None``: all n; ``1`` is the
      fast choice for convolutional networks on CPU); must divide ``n_perturbations``.
    perturbation: distribution of ε, ``"gaussian"`` or ``"rademacher"`` (``rwp``, ``fsgld``).
    langevin_noise: distribution of ξ, ``"gaussian"`` or ``"binomial"`` (``sgld``, ``fsgld``).
    seed: seed of the label noise, the initialisation, the batch order and the optimizer.
    val_fraction: fraction of the training set held out for validation.
    augment: crop-and-flip augmentation (default: on for CIFAR-N, off otherwise).
    max_steps_per_epoch: cap on the steps per epoch (for quick runs).
    out: output directory (config, history, checkpoints); ``None`` keeps nothing on disk.
    resume: continue from the latest checkpoint in ``out``.
    stop_after: stop after this many epochs in total, as if interrupted.
    progress: show a tqdm progress bar.
  """

  dataset: str = "mnist1d"
  noise: str = "none"
  label_set: str | None = None
  data_dir: str | None = None
  model: str | None = None
  width: int | None = None
  optimizer: str = "fsgld"
  epochs: int = 30
  batch_size: int = 128
  lr: float = 0.05
  beta: float = 1e8
  sigma: float | None = None
  eta: float = 0.1
  rho: float = 0.05
  momentum: float | None = None
  weight_decay: float = 5e-4
  n_perturbations: int = 1
  split_batch: bool = False
  perturbation_batch_size: int | None = None
  perturbation: Perturbation = "gaussian"
  langevin_noise: LangevinNoise = "gaussian"
  seed: int = 0
  val_fraction: float = 0.0
  augment: bool | None = None
  max_steps_per_epoch: int | None = None
  out: str | None = None
  resume: bool = False
  stop_after: int | None = None
  progress: bool = True

  def __post_init__(self) -> None:
    if self.dataset not in DATASETS:
      raise ValueError(f"Unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}.")
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(
        f"Unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}."
      )
    for name in ("epochs", "batch_size", "n_perturbations"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
    if self.n_perturbations > 1 and self.optimizer not in PERTURBED:
      raise ValueError(f"n_perturbations > 1 applies to {', '.join(PERTURBED)} only.")
    if self.split_batch and self.batch_size % self.n_perturbations:
      raise ValueError(
        f"split_batch needs batch_size ({self.batch_size}) divisible by n_perturbations "
        f"({self.n_perturbations})."
      )
    group = self.perturbation_batch_size
    if group is not None and (group < 1 or self.n_perturbations % group):
      raise ValueError(
        f"perturbation_batch_size must divide n_perturbations ({self.n_perturbations}), "
        f"got {group}."
      )
    if self.resume and self.out is None:
      raise ValueError("resume needs an output directory (out).")
    if self.dataset.startswith("cifar") and self.data_dir is None:
      raise ValueError(f"{self.dataset} needs data_dir (--data-dir) with the CIFAR files.")

  def to_json(self) -> dict[str, Any]:
    """The configuration as a JSON-compatible dict (``inf`` as the string ``"inf"``)."""
    return {k: _jsonable(v) for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_json(cls, values: dict[str, Any]) -> TrainConfig:
    """Inverse of :meth:`to_json`."""
    kwargs: dict[str, Any] = {k: (math.inf if v == "inf" else v) for k, v in values.items()}
    return cls(**kwargs)


def _jsonable(value: Any) -> Any:
  return "inf" if isinstance(value, float) and math.isinf(value) else value


# --------------------------------------------------------------------------------------
# Data, model, state
# --------------------------------------------------------------------------------------


def load_dataset(config: TrainConfig) -> data.Dataset:
  """The dataset of ``config``, with its label noise and validation split."""
  if config.dataset.startswith("cifar"):
    if config.noise not in ("none", None):
      raise ValueError("CIFAR-N carries human label noise: choose it with label_set, not noise.")
    assert config.data_dir is not None
    return data.load_cifar_n(
      config.data_dir,
      dataset=config.dataset,
      label_set=config.label_set,
      seed=config.seed,
      val_fraction=config.val_fraction,
    )
  load = data.load_mnist1d if config.dataset == "mnist1d" else data.load_digits
  return load(noise=config.noise, seed=config.seed, val_fraction=config.val_fraction)


def _steps_per_epoch(config: TrainConfig, num_train: int) -> int:
  steps = num_train // config.batch_size
  if steps == 0:
    raise ValueError(f"batch_size {config.batch_size} exceeds the {num_train} training examples.")
  return steps if config.max_steps_per_epoch is None else min(steps, config.max_steps_per_epoch)


def _keys(seed: int) -> dict[str, jax.Array]:
  root = jax.random.key(seed)
  return {
    "init": jax.random.fold_in(root, _INIT_STREAM),
    "optimizer": jax.random.fold_in(root, _OPTIMIZER_STREAM),
    "order": jax.random.fold_in(root, _ORDER_STREAM),
    "augment": jax.random.fold_in(root, _AUGMENT_STREAM),
  }


def init_state(
  model: Any, optimizer: Optimizer, example: np.ndarray, key: jax.Array
) -> fsgld_optax.flax.TrainState:
  """A fresh train state for a Linen ``model`` (``batch_stats`` empty without BatchNorm)."""
  variables = model.init(key, jnp.asarray(example[:1]), train=False)
  return fsgld_optax.flax.TrainState.create(
    apply_fn=model.apply,
    params=variables["params"],
    batch_stats=variables.get("batch_stats", {}),
    tx=optimizer.tx,
  ).replace(step=jnp.zeros((), jnp.int32))


# --------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------


def make_loss(apply_fn: Callable[..., Any], has_batch_stats: bool) -> Callable[..., Any]:
  """``loss(params, batch_stats, x, y) -> (mean cross-entropy, new batch_stats)``."""

  def loss_fn(params: Any, batch_stats: Any, x: jax.Array, y: jax.Array) -> Any:
    if has_batch_stats:
      variables = {"params": params, "batch_stats": batch_stats}
      logits, updates = apply_fn(variables, x, train=True, mutable=["batch_stats"])
      batch_stats = updates["batch_stats"]
    else:
      logits = apply_fn({"params": params}, x, train=True)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, batch_stats

  return loss_fn


def make_train_step(
  optimizer: Optimizer,
  loss_fn: Callable[..., Any],
  *,
  n_perturbations: int = 1,
  split_batch: bool = False,
  perturbation_batch_size: int | None = None,
  perturbation: Perturbation = "gaussian",
  augment_key: jax.Array | None = None,
) -> Callable[..., tuple[fsgld_optax.flax.TrainState, jax.Array]]:
  """``step(state, x, y) -> (state, loss)`` for ``optimizer``'s kind of gradient."""
  perturbed_step = fsgld_optax.flax.linen_train_step(
    loss_fn,
    n_perturbations=n_perturbations,
    split_batch=split_batch,
    perturbation_batch_size=perturbation_batch_size,
    perturbation=perturbation,
  )

  def step(state: fsgld_optax.flax.TrainState, x: jax.Array, y: jax.Array) -> Any:
    if augment_key is not None:
      x = data.augment(jax.random.fold_in(augment_key, state.step), x)
    if optimizer.gradient == "perturbed":
      return perturbed_step(state, x, y)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, batch_stats), grads = grad_fn(state.params, state.batch_stats, x, y)
    if optimizer.gradient == "plain":
      return state.apply_gradients(grads=grads, batch_stats=batch_stats), loss

    # SAM: the adversarial gradient at θ + ρ g/‖g‖ uses the batch statistics of this batch
    # but does not update the running averages a second time.
    def adversarial_grad(params: Any, _: Any) -> Any:
      return jax.grad(loss_fn, has_aux=True)(params, state.batch_stats, x, y)[0]

    updates, opt_state = optax.with_extra_args_support(state.tx).update(
      grads, state.opt_state, state.params, grad_fn=adversarial_grad
    )
    new_state = state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, updates),
      opt_state=opt_state,
      batch_stats=batch_stats,
    )
    return new_state, loss

  return step


@functools.lru_cache(maxsize=8)
def make_predict(model: Any, has_batch_stats: bool) -> Callable[..., Any]:
  """``predict(params, batch_stats, x) -> labels`` of a Linen model in evaluation mode, jitted.

  Cached: equal models share one compiled function, whatever their optimizer.
  """
  apply_fn = model.apply

  def predict(params: Any, batch_stats: Any, x: jax.Array) -> jax.Array:
    variables = (
      {"params": params, "batch_stats": batch_stats} if has_batch_stats else {"params": params}
    )
    return jnp.argmax(apply_fn(variables, x, train=False), axis=-1)

  return jax.jit(predict)


def predictions(
  predict: Callable[..., Any],
  state: fsgld_optax.flax.TrainState,
  x: np.ndarray,
  batch_size: int = 1000,
) -> np.ndarray:
  """The labels that ``predict`` assigns to ``x``, in batches.

  The last batch is padded to ``batch_size``, so ``predict`` compiles once per input shape.
  """
  labels = []
  for start in range(0, len(x), batch_size):
    xb = x[start : start + batch_size]
    size = len(xb)
    if size < batch_size:
      xb = np.concatenate([xb, np.zeros((batch_size - size, *xb.shape[1:]), xb.dtype)])
    labels.append(np.asarray(predict(state.params, state.batch_stats, xb))[:size])
  return np.concatenate(labels) if labels else np.zeros(0, np.int32)


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------


def _checkpointable(state: fsgld_optax.flax.TrainState) -> dict[str, Any]:
  return {
    "step": state.step,
    "params": state.params,
    "batch_stats": state.batch_stats,
    "opt_state": state.opt_state,
  }


def _checkpoint_manager(out: Path) -> Any:
  import orbax.checkpoint as ocp

  options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
  return ocp.CheckpointManager((out / "checkpoints").absolute(), options=options)


def _save(manager: Any, epoch: int, state: Any, meta: dict[str, Any]) -> None:
  import orbax.checkpoint as ocp

  manager.save(
    epoch,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(_checkpointable(state)), meta=ocp.args.JsonSave(meta)
    ),
  )
  manager.wait_until_finished()


def _restore(manager: Any, state: Any) -> tuple[Any, dict[str, Any]] | None:
  """The latest checkpoint as ``(state, meta)``, or ``None`` if there is none."""
  import orbax.checkpoint as ocp

  epoch = manager.latest_step()
  if epoch is None:
    return None
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _checkpointable(state))
  restored = manager.restore(
    epoch,
    args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()),
  )
  return state.replace(**restored["state"]), restored["meta"]


def _write_json(path: Path, value: Any) -> None:
  """Writes ``value`` to ``path`` atomically."""
  with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
    json.dump(value, f, indent=2)
    f.write("\n")
  os.replace(f.name, path)


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Spec:
  """What the compiled functions of a run depend on (hashable, for reuse across runs)."""

  model: str
  width: int | None
  num_classes: int
  input_shape: tuple[int, ...]
  optimizer: str
  lr: float
  total_steps: int
  seed: int
  weight_decay: float
  beta: float
  sigma: float | None
  eta: float
  rho: float
  momentum: float | None
  n_perturbations: int
  split_batch: bool
  perturbation_batch_size: int | None
  perturbation: Perturbation
  langevin_noise: LangevinNoise
  augment: bool


@dataclasses.dataclass(frozen=True)
class _Functions:
  model: Any
  optimizer: Optimizer
  has_batch_stats: bool
  step: Callable[..., Any]
  predict: Callable[..., Any]


@functools.lru_cache(maxsize=8)
def _functions(spec: _Spec) -> _Functions:
  """The model, optimizer and jitted step and predict functions of a run.

  Cached, so that runs with the same settings (a resumed run, repeated runs in one process)
  reuse the compiled step and run exactly the same program.
  """
  keys = _keys(spec.seed)
  kwargs = {} if spec.width is None else {"width": spec.width}
  model: Any = models.create_model(spec.model, spec.num_classes, **kwargs)
  if not hasattr(model, "init"):
    raise ValueError(f"The training CLI runs Linen models; {spec.model!r} is not one.")
  optimizer = make_optimizer(
    spec.optimizer,
    learning_rate=spec.lr,
    total_steps=spec.total_steps,
    key=keys["optimizer"],
    weight_decay=spec.weight_decay,
    beta=spec.beta,
    sigma=spec.sigma,
    eta=spec.eta,
    rho=spec.rho,
    momentum=spec.momentum,
    langevin_noise=spec.langevin_noise,
  )
  shapes = jax.eval_shape(
    lambda: model.init(keys["init"], jnp.zeros((1, *spec.input_shape)), train=False)
  )
  has_batch_stats = bool(jax.tree.leaves(shapes.get("batch_stats", {})))
  step = make_train_step(
    optimizer,
    make_loss(model.apply, has_batch_stats),
    n_perturbations=spec.n_perturbations,
    split_batch=spec.split_batch,
    perturbation_batch_size=spec.perturbation_batch_size,
    perturbation=spec.perturbation,
    augment_key=keys["augment"] if spec.augment else None,
  )
  return _Functions(
    model, optimizer, has_batch_stats, jax.jit(step), make_predict(model, has_batch_stats)
  )


def _spec(config: TrainConfig, ds: data.Dataset) -> _Spec:
  return _Spec(
    model=config.model or _DEFAULT_MODELS[config.dataset],
    width=config.width,
    num_classes=ds.num_classes,
    input_shape=tuple(ds.x_train.shape[1:]),
    optimizer=config.optimizer,
    lr=config.lr,
    total_steps=config.epochs * _steps_per_epoch(config, len(ds.x_train)),
    seed=config.seed,
    weight_decay=config.weight_decay,
    beta=config.beta,
    sigma=config.sigma,
    eta=config.eta,
    rho=config.rho,
    momentum=config.momentum,
    n_perturbations=config.n_perturbations,
    split_batch=config.split_batch,
    perturbation_batch_size=config.perturbation_batch_size,
    perturbation=config.perturbation,
    langevin_noise=config.langevin_noise,
    augment=config.dataset.startswith("cifar") if config.augment is None else config.augment,
  )


def build(
  config: TrainConfig, dataset: data.Dataset | None = None
) -> tuple[Callable[..., Any], fsgld_optax.flax.TrainState]:
  """The jitted train step and the initial train state of the run that :func:`train` runs.

  For timing steps or writing a custom loop: ``state, loss = step(state, x, y)``.

  Args:
    config: the run.
    dataset: the data, as for :func:`train`.

  Returns:
    ``(step, state)``.
  """
  ds = load_dataset(config) if dataset is None else dataset
  fns = _functions(_spec(config, ds))
  return fns.step, init_state(fns.model, fns.optimizer, ds.x_train, _keys(config.seed)["init"])


def train(
  config: TrainConfig,
  *,
  dataset: data.Dataset | None = None,
  callback: Callable[[dict[str, Any], fsgld_optax.flax.TrainState], None] | None = None,
) -> list[dict[str, Any]]:
  """Trains as ``config`` says and returns the history: one dict of metrics per epoch.

  Args:
    config: the run.
    dataset: the data to use instead of loading ``config.dataset`` (e.g. a dataset that
      the caller already loaded or modified); ``config`` should still describe it.
    callback: called after every epoch with that epoch's metrics and the train state.

  Returns:
    The per-epoch metrics of every epoch trained so far, including those restored by
    ``resume`` (see the module docstring for the fields).
  """
  ds = load_dataset(config) if dataset is None else dataset
  steps_per_epoch = _steps_per_epoch(config, len(ds.x_train))
  fns = _functions(_spec(config, ds))
  optimizer, predict = fns.optimizer, fns.predict
  keys = _keys(config.seed)
  state = init_state(fns.model, optimizer, ds.x_train, keys["init"])
  order_key = keys["order"]

  history: list[dict[str, Any]] = []
  out = Path(config.out) if config.out is not None else None
  manager = None
  if out is not None:
    out.mkdir(parents=True, exist_ok=True)
    manager = _checkpoint_manager(out)
    try:
      if config.resume:
        restored = _restore(manager, state)
        if restored is not None:
          state, meta = restored
          _check_resumable(TrainConfig.from_json(meta["config"]), config)
          history = list(meta["history"])
      elif manager.latest_step() is not None:
        raise ValueError(
          f"{out} already holds checkpoints: pass resume=True (--resume) to continue that "
          "run, or choose another output directory."
        )
    except BaseException:
      manager.close()
      raise
    _write_json(out / "config.json", config.to_json())

  first_epoch = len(history)
  last_epoch = config.epochs if config.stop_after is None else min(config.epochs, config.stop_after)

  bar = tqdm(
    total=(last_epoch - first_epoch) * steps_per_epoch,
    desc=f"{config.optimizer} {ds.name}",
    disable=not config.progress,
    unit="step",
    dynamic_ncols=True,
  )
  try:
    # Compile (or find the compiled step) before the clock starts; the result is discarded.
    jax.block_until_ready(
      fns.step(state, ds.x_train[: config.batch_size], ds.y_train[: config.batch_size])
    )
    for epoch in range(first_epoch, last_epoch):
      batches = data.iterate_batches(
        order_key, ds.x_train, ds.y_train, config.batch_size, epoch=epoch
      )
      loss_sum = jnp.zeros(())
      start = time.perf_counter()
      for _, (xb, yb) in zip(range(steps_per_epoch), batches, strict=False):
        state, loss = fns.step(state, xb, yb)
        loss_sum = loss_sum + loss
        bar.update()
      loss_sum = jax.block_until_ready(loss_sum)
      seconds = time.perf_counter() - start
      metrics = _evaluate(predict, state, ds, config.batch_size)
      record = {
        "epoch": epoch + 1,
        "step": (epoch + 1) * steps_per_epoch,
        "lr": jnp.asarray(optimizer.schedule((epoch + 1) * steps_per_epoch - 1)).item(),
        "train_loss": loss_sum.item() / steps_per_epoch,
        **metrics,
        "sec_per_step": seconds / steps_per_epoch,
      }
      history.append(record)
      bar.set_postfix(
        epoch=epoch + 1, loss=f"{record['train_loss']:.3f}", test=f"{record['test_acc']:.3f}"
      )
      if not math.isfinite(record["train_loss"]):
        bar.write(f"Training diverged at epoch {epoch + 1} (loss {record['train_loss']}).")
      if out is not None and manager is not None:
        meta = {"config": config.to_json(), "history": history}
        _save(manager, epoch + 1, state, meta)
        _write_json(out / "history.json", history)
      if callback is not None:
        callback(record, state)
  finally:
    bar.close()
    if manager is not None:
      manager.close()
  return history


def _evaluate(
  predict: Callable[..., Any], state: Any, ds: data.Dataset, batch_size: int
) -> dict[str, float]:
  batch_size = max(batch_size, 1000)
  accuracy = lambda pred, y: float(np.mean(pred == y))
  train_pred = predictions(predict, state, ds.x_train, batch_size)
  metrics = {
    "test_acc": accuracy(predictions(predict, state, ds.x_test, batch_size), ds.y_test),
    "noisy_train_acc": accuracy(train_pred, ds.y_train),
    "clean_train_acc": accuracy(train_pred, ds.y_train_clean),
  }
  if ds.x_val is not None and ds.y_val is not None and ds.y_val_clean is not None:
    val_pred = predictions(predict, state, ds.x_val, batch_size)
    metrics["val_acc"] = accuracy(val_pred, ds.y_val)
    metrics["val_clean_acc"] = accuracy(val_pred, ds.y_val_clean)
  return metrics


def _check_resumable(saved: TrainConfig, config: TrainConfig) -> None:
  differ = [
    f.name
    for f in dataclasses.fields(TrainConfig)
    if f.name not in _RESUMABLE_FIELDS and getattr(saved, f.name) != getattr(config, f.name)
  ]
  if differ:
    changes = ", ".join(f"{n}: {getattr(saved, n)!r} -> {getattr(config, n)!r}" for n in differ)
    raise ValueError(
      f"Cannot resume: the checkpoint was written with different settings ({changes}). "
      "Resume with the same arguments, or start a new run in another --out directory."
    )


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser of :func:`main`."""
  d = TrainConfig()
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.train",
    description="Train a classifier on noisy labels with fSGLD or a baseline.",
  )
  p.add_argument("--dataset", choices=DATASETS, default=d.dataset)
  p.add_argument("--noise", default=d.noise, help="e.g. symmetric:0.4, pairflip:0.2 or none")
  p.add_argument("--label-set", default=None, help="CIFAR-N labels: aggre, worst, noisy100...")
  p.add_argument("--data-dir", default=None, help="directory with the CIFAR files")
  p.add_argument("--model", default=None, choices=models.available_models())
  p.add_argument("--width", type=int, default=None, help="ResNet width (default 64)")
  p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
  p.add_argument("--epochs", type=int, default=d.epochs)
  p.add_argument("--batch-size", type=int, default=d.batch_size)
  p.add_argument("--lr", type=float, default=d.lr, help="initial learning rate")
  p.add_argument("--beta", type=float, default=d.beta, help="inverse temperature (inf: none)")
  p.add_argument("--sigma", type=float, default=None, help="perturbation scale")
  p.add_argument("--eta", type=float, default=d.eta, help="coupling exponent")
  p.add_argument("--rho", type=float, default=d.rho, help="SAM radius")
  p.add_argument("--momentum", type=float, default=d.momentum, help="sgd/sam/rwp/fsghmc momentum")
  p.add_argument("--weight-decay", type=float, default=d.weight_decay)
  p.add_argument("--n-perturbations", type=int, default=d.n_perturbations)
  p.add_argument(
    "--split-batch", action="store_true", help="each perturbation on a 1/n slice of the batch"
  )
  p.add_argument(
    "--perturbation-batch-size", type=int, default=None, help="perturbations evaluated at once"
  )
  p.add_argument("--perturbation", choices=("gaussian", "rademacher"), default=d.perturbation)
  p.add_argument("--langevin-noise", choices=("gaussian", "binomial"), default=d.langevin_noise)
  p.add_argument("--seed", type=int, default=d.seed)
  p.add_argument("--val-fraction", type=float, default=d.val_fraction)
  p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None)
  p.add_argument("--max-steps-per-epoch", type=int, default=None)
  p.add_argument("--out", default=None, help="directory for config, history and checkpoints")
  p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
  p.add_argument("--stop-after", type=int, default=None, help="stop after this many epochs")
  p.add_argument("--no-progress", dest="progress", action="store_false")
  return p


def config_from_args(argv: Sequence[str] | None = None) -> TrainConfig:
  """Parses command-line arguments into a :class:`TrainConfig`."""
  args = build_parser().parse_args(argv)
  return TrainConfig(**vars(args))


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """Runs :func:`train` from command-line arguments and prints the last epoch's metrics."""
  config = config_from_args(argv)
  history = train(config)
  if history:
    last = history[-1]
    best = max(h["test_acc"] for h in history)
    print(
      f"{config.optimizer} on {config.dataset} ({config.noise}): epoch {last['epoch']}, "
      f"test accuracy {last['test_acc']:.4f} (best {best:.4f}), "
      f"noisy-train accuracy {last['noisy_train_acc']:.4f}, "
      f"{1e3 * last['sec_per_step']:.2f} ms/step",
      file=sys.stdout,
    )
  return history


if __name__ == "__main__":
  main()
