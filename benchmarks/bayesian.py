r"""Bayesian deep learning: cyclical SG-MCMC with and without flatness, SGD and a deep ensemble.

The paper's Bayesian experiment (ResNet-18 on CIFAR-10/100, a cyclical cosine step size over
4 cycles, samples at the end of each cycle averaged, SVHN as the out-of-distribution set) at
a scale that runs on two CPU cores, with the library's :mod:`fsgld_optax.bayes`:

* **Data.** MNIST-1D (its standard 5,000 signals, generated offline, 80% for training),
  restricted to the digits 0-4 (about 1,800 training signals: few data, a broad posterior);
  the test signals of the digits 5-9 are the out-of-distribution (OOD) set (held-out
  classes). 10% of the training signals are a validation split. The split is fixed; a seed
  changes the initialisation, the batch order and the optimizer's noise, and every method
  sees the same seeds (paired comparisons).
* **Model.** The 1-D CNN of :mod:`benchmarks.models` (channels 16-32-64, BatchNorm), batch
  128, weight decay 5e-4 (a Gaussian prior of precision N·w), 4 cycles of 20 epochs.
* **Methods** (the same number of gradient steps each):

  - ``sgd``: one model, SGD with heavy-ball momentum 0.9 and a cosine decay to 0;
  - ``ensemble``: a deep ensemble of 4 such models, each trained for a quarter of the steps;
  - ``csgld``: cyclical SGLD (Zhang et al., 2020): :func:`fsgld_optax.sgld` on
    :func:`fsgld_optax.bayes.cyclical_schedule`, SGD while exploring (the first 80% of every
    cycle), Langevin noise at β = N/T while sampling, 3 samples per cycle (the ends of its
    last 3 epochs; 12 in all) kept in an on-device ring buffer inside the jitted step;
  - ``cfsgld``: the same with :func:`fsgld_optax.fsgld` at an explicit σ: random weight
    perturbation (RWP) while exploring, fSGLD while sampling;
  - ``csghmc`` / ``cfsghmc``: the same with :func:`fsgld_optax.sghmc` / ``fsghmc`` (momentum
    0.9, step size λ₀(1 − m), so the same effective step).

  Predictions: the mean of the predicted probabilities over the samples (or members), with
  each sample's own BatchNorm statistics (:func:`fsgld_optax.bayes.average_predictions`).
* **Hyperparameters**, chosen on the validation split by the NLL of the predictive, on a
  search seed that is not a reported seed: SGD's learning rate (also the ensemble's); cSGLD's
  λ₀ and temperature T (shared by all samplers; cSGHMC uses λ₀(1 − m)); fSGLD's σ (shared
  by cfSGHMC).
* **Metrics** on the in-distribution test set: accuracy, NLL, ECE (15 bins), Brier score;
  OOD detection by the predictive entropy: AUROC, and AUPR with OOD as positive; mean ± std
  over seeds, paired differences with t intervals; the rank-normalised split R-hat and bulk
  ESS across seeds (chains) of the predicted probability of the true class (function space);
  a reliability diagram per method, pooled over seeds.

``python -m benchmarks.bayesian`` writes ``bayesian.{json,md,png}`` (about 10 minutes on two
cores); ``--quick`` a smoke run. ``--check`` retrains seed ``seeds[0]`` of every method with
its recorded hyperparameters (``--quick``: SGD and cfSGLD) and compares its six metrics with
the recorded ones: bitwise on the machine of the recorded run, else each within twice the
recorded standard deviation of that metric over the seeds (a rerun on another CPU moves a
trained network by about as much as another seed would, see the benchmarks README).

The paper's setting on CIFAR-10/100 (ResNet-18, 4 cycles × 50 epochs, 16 samples, SVHN)
runs from files the user has::

    python -m benchmarks.bayesian cifar --data-dir DATA --dataset cifar10 \
        --svhn DATA/test_32x32.mat --out runs/bayesian_cifar10
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

import fsgld_optax
import fsgld_optax.flax
from benchmarks import _report, data, models
from benchmarks.optimizers import Optimizer
from benchmarks.train import make_loss, make_train_step
from fsgld_optax import bayes

__all__ = [
  "DEFAULT",
  "METHODS",
  "QUICK",
  "Config",
  "check",
  "load_svhn",
  "main",
  "markdown",
  "plot",
  "run",
]

METHODS = ("sgd", "ensemble", "csgld", "cfsgld", "csghmc", "cfsghmc")
LABELS = {
  "sgd": "SGD",
  "ensemble": "Deep ensemble",
  "csgld": "cSGLD",
  "cfsgld": "cfSGLD",
  "csghmc": "cSGHMC",
  "cfsghmc": "cfSGHMC",
}
SAMPLERS = ("csgld", "cfsgld", "csghmc", "cfsghmc")
METRICS = ("accuracy", "nll", "ece", "brier", "ood_auroc", "ood_aupr")
METRIC_LABELS = {
  "accuracy": "accuracy (%)",
  "nll": "NLL",
  "ece": "ECE (%)",
  "brier": "Brier",
  "ood_auroc": "OOD AUROC (%)",
  "ood_aupr": "OOD AUPR (%)",
}
PERCENT = ("accuracy", "ece", "ood_auroc", "ood_aupr")
#: Paired comparisons reported: (method, baseline).
PAIRS = (("cfsgld", "csgld"), ("cfsghmc", "csghmc"), ("cfsgld", "sgd"), ("cfsghmc", "sgd"))

# Streams folded into a seed's key.
_INIT_STREAM, _OPTIMIZER_STREAM, _ORDER_STREAM, _AUGMENT_STREAM = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class Config:
  """Settings of the benchmark.

  Attributes:
    num_samples: MNIST-1D signals generated (80% training, 20% test).
    in_classes: the in-distribution digits; the test signals of the others are OOD.
    val_fraction: fraction of the training split held out for validation.
    data_seed: seed of the validation split (fixed across seeds).
    cnn_features: channels of the 1-D CNN.
    batch_size: examples per step.
    cycles: M, the cycles of the samplers (and the members of the ensemble).
    epochs_per_cycle: epochs per cycle; every method takes ``cycles * epochs_per_cycle``
      epochs of steps.
    samples_per_cycle: samples per cycle, one per epoch at the end of the cycle.
    exploration_fraction: the part of each cycle without Langevin noise.
    weight_decay: L2 coefficient w (prior precision N·w).
    momentum: heavy-ball momentum of SGD, the ensemble and the SGHMC samplers.
    sgd_lr_grid: SGD learning rates searched.
    sampler_lr_grid: cSGLD's λ₀ searched (cSGHMC takes λ₀(1 − m)).
    temperature_grid: posterior temperatures T searched, β = N/T.
    sigma_grid: fSGLD's σ searched.
    seeds: the reported seeds (chains).
    search_seed: the seed of the hyperparameter search.
    num_bins: ECE bins.
    max_steps_per_epoch: cap on steps per epoch (quick runs).
  """

  num_samples: int = 5000
  in_classes: tuple[int, ...] = (0, 1, 2, 3, 4)
  val_fraction: float = 0.1
  data_seed: int = 0
  cnn_features: tuple[int, ...] = (16, 32, 64)
  batch_size: int = 128
  cycles: int = 4
  epochs_per_cycle: int = 20
  samples_per_cycle: int = 3
  exploration_fraction: float = 0.8
  weight_decay: float = 5e-4
  momentum: float = 0.9
  sgd_lr_grid: tuple[float, ...] = (0.02, 0.05, 0.1)
  sampler_lr_grid: tuple[float, ...] = (0.5, 1.0, 2.0)
  temperature_grid: tuple[float, ...] = (1.0, 0.1, 0.01)
  sigma_grid: tuple[float, ...] = (0.002, 0.005, 0.01)
  seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
  search_seed: int = 1000
  num_bins: int = 15
  max_steps_per_epoch: int | None = None


DEFAULT = Config()
QUICK = Config(
  cnn_features=(8,),
  epochs_per_cycle=2,
  samples_per_cycle=1,
  exploration_fraction=0.5,
  sgd_lr_grid=(0.05,),
  sampler_lr_grid=(0.2,),
  temperature_grid=(1.0,),
  sigma_grid=(0.01,),
  seeds=(0, 1),
  max_steps_per_epoch=3,
)


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
  """In-distribution training / validation / test sets and an OOD set, as NumPy arrays."""

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  x_ood: np.ndarray
  ood_name: str
  num_classes: int


def mnist1d_problem(config: Config) -> Problem:
  """MNIST-1D restricted to ``config.in_classes``; the other test digits are the OOD set."""
  ds = data.load_mnist1d(
    num_samples=config.num_samples, seed=config.data_seed, val_fraction=config.val_fraction
  )
  assert ds.x_val is not None and ds.y_val is not None
  classes = np.asarray(config.in_classes)
  relabel = np.full(ds.num_classes, -1, np.int32)
  relabel[classes] = np.arange(len(classes), dtype=np.int32)

  def keep(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mask = np.isin(y, classes)
    return x[mask], relabel[y[mask]]

  held_out = sorted(set(range(ds.num_classes)) - set(config.in_classes))
  return Problem(
    name=f"MNIST-1D digits {', '.join(map(str, config.in_classes))}",
    x_train=keep(ds.x_train, ds.y_train)[0],
    y_train=keep(ds.x_train, ds.y_train)[1],
    x_val=keep(ds.x_val, ds.y_val)[0],
    y_val=keep(ds.x_val, ds.y_val)[1],
    x_test=keep(ds.x_test, ds.y_test)[0],
    y_test=keep(ds.x_test, ds.y_test)[1],
    x_ood=ds.x_test[~np.isin(ds.y_test, classes)],
    ood_name=f"MNIST-1D digits {', '.join(map(str, held_out))} (held out)",
    num_classes=len(classes),
  )


def load_svhn(path: str | Path, dataset: str = "cifar10") -> np.ndarray:
  """The SVHN test images from the user's ``test_32x32.mat``, normalised like CIFAR.

  Args:
    path: the file ``test_32x32.mat`` of the SVHN "cropped digits" format (a MATLAB file
      with ``X`` of shape ``(32, 32, 3, N)``, uint8), or a folder that contains it; or an
      ``.npz`` file with an array ``x`` of uint8 NHWC images.
    dataset: ``"cifar10"`` or ``"cifar100"``: whose mean and std normalise the images (the
      OOD inputs go through the in-distribution model's preprocessing).

  Returns:
    float32 NHWC images.

  Raises:
    FileNotFoundError: if the file is missing.
    ValueError: for an unexpected layout.
  """
  path = Path(path).expanduser()
  if path.is_dir():
    path = path / "test_32x32.mat"
  if not path.is_file():
    raise FileNotFoundError(f"SVHN test file not found: {path} (expected test_32x32.mat).")
  if path.suffix == ".npz":
    with np.load(path) as f:
      images = np.asarray(f["x"])
  else:
    import scipy.io

    images = np.asarray(scipy.io.loadmat(path)["X"]).transpose(3, 0, 1, 2)
  if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8:
    raise ValueError(f"{path}: expected uint8 images (N, 32, 32, 3), got {images.shape}.")
  return data.normalize_cifar(images, dataset)


def cifar_problem(
  data_dir: str | Path, dataset: str, svhn: str | Path, val_fraction: float, seed: int
) -> Problem:
  """CIFAR-10/100 from the user's files (clean labels) and SVHN as the OOD set."""
  ds = data.load_cifar_n(
    data_dir, dataset=dataset, label_set="clean", seed=seed, val_fraction=val_fraction
  )
  empty = np.zeros((0, *ds.x_train.shape[1:]), np.float32)
  return Problem(
    name=dataset,
    x_train=ds.x_train,
    y_train=ds.y_train,
    x_val=ds.x_val if ds.x_val is not None else empty,
    y_val=ds.y_val if ds.y_val is not None else np.zeros(0, np.int32),
    x_test=ds.x_test,
    y_test=ds.y_test,
    x_ood=load_svhn(svhn, dataset),
    ood_name="SVHN (test)",
    num_classes=ds.num_classes,
  )


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a run needs besides the data: model, step counts, options."""

  model: Any
  batch_size: int
  steps_per_epoch: int
  cycles: int
  epochs_per_cycle: int
  samples_per_cycle: int
  exploration_fraction: float
  weight_decay: float
  momentum: float
  augment: bool = False
  sample_dir: Path | None = None  # None: samples in an on-device ring buffer

  @property
  def total_steps(self) -> int:
    return self.cycles * self.epochs_per_cycle * self.steps_per_epoch


def seed_keys(seed: int) -> dict[str, jax.Array]:
  """Independent keys of one seed: initialisation, optimizer, batch order, augmentation."""
  root = jax.random.key(seed)
  streams = {
    "init": _INIT_STREAM,
    "optimizer": _OPTIMIZER_STREAM,
    "order": _ORDER_STREAM,
    "augment": _AUGMENT_STREAM,
  }
  return {name: jax.random.fold_in(root, s) for name, s in streams.items()}


def make_method(
  method: str, hparams: dict[str, Any], setup: Setup, num_train: int, key: jax.Array
) -> tuple[Optimizer, bayes.CyclicalSchedule | None, int]:
  """The optimizer of ``method``, its cyclical schedule (samplers), and its steps per run."""
  wd, m = setup.weight_decay, setup.momentum
  if method in ("sgd", "ensemble"):
    steps = setup.total_steps if method == "sgd" else setup.total_steps // setup.cycles
    schedule = optax.cosine_decay_schedule(hparams["lr"], steps)
    tx = optax.chain(optax.add_decayed_weights(wd), optax.sgd(schedule, momentum=m))
    return Optimizer(method, tx, "plain", schedule), None, steps  # pyright: ignore[reportArgumentType]
  momentum = method in ("csghmc", "cfsghmc")
  lr0 = hparams["lr"] * (1 - m) if momentum else hparams["lr"]
  cyclical = bayes.cyclical_schedule(
    lr0,
    setup.total_steps,
    setup.cycles,
    beta=bayes.posterior_beta(num_train, hparams["temperature"]),
    exploration_fraction=setup.exploration_fraction,
    samples_per_cycle=setup.samples_per_cycle,
    thinning=setup.steps_per_epoch,
  )
  lr, beta = cyclical.learning_rate, cyclical.beta
  if method == "csgld":
    tx, kind = fsgld_optax.sgld(lr, beta, weight_decay=wd, key=key), "plain"
  elif method == "cfsgld":
    tx = fsgld_optax.fsgld(lr, beta, sigma=hparams.get("sigma"), weight_decay=wd, key=key)
    kind = "perturbed"
  elif method == "csghmc":
    tx, kind = fsgld_optax.sghmc(lr, beta, momentum=m, weight_decay=wd, key=key), "plain"
  elif method == "cfsghmc":
    tx = fsgld_optax.fsghmc(lr, beta, momentum=m, sigma=hparams["sigma"], weight_decay=wd, key=key)
    kind = "perturbed"
  else:
    raise ValueError(f"Unknown method {method!r}; choose from {', '.join(METHODS)}.")
  return Optimizer(method, tx, kind, lr), cyclical, setup.total_steps  # pyright: ignore[reportArgumentType]


@dataclasses.dataclass
class Outcome:
  """The predictive of one run on the evaluation inputs, and per-sample true-class probabilities."""

  probs: np.ndarray
  p_true: np.ndarray  # (samples, num_labelled) probability of the true class per sample
  num_samples: int
  seconds: float


class Trainer:
  """Trains and evaluates the methods; compiles one step per (method, hyperparameters)."""

  def __init__(self, problem: Problem, setup: Setup) -> None:
    self.problem = problem
    self.setup = setup
    model = setup.model
    self._loss = make_loss(model.apply, True)
    self._steps: dict[tuple[Any, ...], Any] = {}

    @jax.jit
    def predict(variables: Any, x: jax.Array) -> jax.Array:
      return jax.nn.softmax(model.apply(variables, x, train=False), axis=-1)

    self._predict = predict
    self._model_init = jax.jit(lambda key, x: model.init(key, x, train=False))

  def predict(self, variables: Any, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Probabilities of ``variables`` on ``x``, in padded batches (one compiled shape)."""
    out = []
    for start in range(0, len(x), batch_size):
      xb = x[start : start + batch_size]
      size = len(xb)
      if size < batch_size:
        xb = np.concatenate([xb, np.zeros((batch_size - size, *xb.shape[1:]), xb.dtype)])
      out.append(np.asarray(self._predict(variables, xb))[:size])
    return np.concatenate(out)

  def _compiled(self, method: str, hparams: dict[str, Any]) -> Any:
    """``(optimizer, cyclical schedule, steps, jitted step, jitted optimizer init)``, cached.

    The step is shared by all seeds (and ensemble members): the transformation reads its key
    from the optimizer state, never from the closure, and the augmentation key is an
    argument.
    """
    cache_key = (method, tuple(sorted(hparams.items())))
    if cache_key not in self._steps:
      optimizer, cyclical, steps = make_method(
        method, hparams, self.setup, len(self.problem.x_train), jax.random.key(0)
      )
      train_step = make_train_step(optimizer, self._loss)
      collect = cyclical.should_collect if cyclical is not None else None
      augment = self.setup.augment

      def step(state: Any, buffer: Any, x: jax.Array, y: jax.Array, augment_key: Any) -> Any:
        k = state.step
        if augment:  # the paper's random crop and flip, drawn from (seed, step)
          x = data.augment(jax.random.fold_in(augment_key, k), x)
        state, loss = train_step(state, x, y)
        if collect is not None and buffer is not None:
          sample = {"params": state.params, "batch_stats": state.batch_stats}
          buffer = bayes.add_sample(buffer, sample, when=collect(k))
        return state, buffer, loss

      num_train = len(self.problem.x_train)

      @jax.jit
      def init(optimizer_key: jax.Array, params: Any) -> Any:
        # The optimizer built with this run's key, traced: one compilation for all seeds.
        return make_method(method, hparams, self.setup, num_train, optimizer_key)[0].tx.init(params)

      self._steps[cache_key] = (
        optimizer,
        cyclical,
        steps,
        jax.jit(step, donate_argnums=(1,)),
        init,
      )
    return self._steps[cache_key]

  def train_one(
    self, method: str, hparams: dict[str, Any], seed: int, member: int, bar: Any
  ) -> tuple[Any, Any]:
    """One model or chain: the final variables and the collected samples (``None`` if none).

    ``member`` numbers the models of an ensemble: it changes the initialisation and the
    batch order within the seed.
    """
    setup, problem = self.setup, self.problem
    keys = {name: jax.random.fold_in(k, member) for name, k in seed_keys(seed).items()}
    optimizer, cyclical, steps, step, init = self._compiled(method, hparams)
    variables = self._model_init(keys["init"], problem.x_train[:1])
    opt_state = init(keys["optimizer"], variables["params"])
    state = fsgld_optax.flax.TrainState(
      step=jnp.zeros((), jnp.int32),
      apply_fn=setup.model.apply,
      params=variables["params"],
      batch_stats=variables.get("batch_stats", {}),
      tx=optimizer.tx,
      opt_state=opt_state,
    )
    buffer, collector, collect_steps = None, None, set()
    if cyclical is not None:
      if setup.sample_dir is None:
        like = {"params": state.params, "batch_stats": state.batch_stats}
        buffer = bayes.init_sample_buffer(like, cyclical.num_samples)
      else:
        collector = bayes.SampleCollector(setup.sample_dir / f"{method}_seed{seed}")
        collector.discard_from(0)  # samples of an earlier run
        collect_steps = set(
          np.flatnonzero(np.asarray(cyclical.should_collect(jnp.arange(steps)))).tolist()
        )
    k = 0
    for epoch in range(steps // setup.steps_per_epoch):
      batches = data.iterate_batches(
        keys["order"], problem.x_train, problem.y_train, setup.batch_size, epoch=epoch
      )
      for _, (xb, yb) in zip(range(setup.steps_per_epoch), batches, strict=False):
        state, buffer, _ = step(state, buffer, xb, yb, keys["augment"])
        if collector is not None and k in collect_steps:
          collector.add({"params": state.params, "batch_stats": state.batch_stats}, step=k)
        k += 1
      if bar is not None:
        bar.update(setup.steps_per_epoch)
    final = {"params": state.params, "batch_stats": state.batch_stats}
    if cyclical is None:
      return final, None
    got = int(buffer.count) if buffer is not None else len(collector or ())
    if got != cyclical.num_samples:
      raise RuntimeError(f"{method} collected {got} samples, expected {cyclical.num_samples}.")
    return final, buffer if buffer is not None else collector

  def run(
    self,
    method: str,
    hparams: dict[str, Any],
    seed: int,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    bar: Any = None,
  ) -> Outcome:
    """Trains ``method`` on one seed; the predictive on ``x_eval`` (its first rows labelled)."""
    start = time.perf_counter()
    labelled = len(y_eval)
    p_true: list[np.ndarray] = []

    def predict(variables: Any, x: np.ndarray) -> np.ndarray:
      probs = self.predict(variables, x)
      p_true.append(probs[np.arange(labelled), y_eval])
      return probs

    if method == "ensemble":
      samples: Any = [
        self.train_one(method, hparams, seed, member, bar)[0] for member in range(self.setup.cycles)
      ]
    else:
      final, samples = self.train_one(method, hparams, seed, 0, bar)
      if samples is None:
        samples = [final]
    probs = bayes.average_predictions(predict, samples, x_eval)
    return Outcome(
      probs=np.asarray(probs),
      p_true=np.stack(p_true),
      num_samples=len(p_true),
      seconds=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames="num_bins")
def _score(probs: jax.Array, labels: jax.Array, ood_probs: jax.Array, num_bins: int) -> dict:
  entropy_in = bayes.predictive_entropy(probs)
  entropy_out = bayes.predictive_entropy(ood_probs)
  return {
    "accuracy": jnp.mean(jnp.argmax(probs, axis=1) == labels),
    "nll": bayes.nll(probs, labels),
    "ece": bayes.ece(probs, labels, num_bins=num_bins),
    "brier": bayes.brier(probs, labels),
    "ood_auroc": bayes.ood_auroc(entropy_in, entropy_out),
    "ood_aupr": bayes.ood_aupr(entropy_in, entropy_out),
  }


def score(probs: np.ndarray, labels: np.ndarray, ood_probs: np.ndarray, num_bins: int) -> dict:
  """Accuracy, NLL, ECE, Brier on the labelled inputs; OOD AUROC/AUPR by predictive entropy.

  The arguments are checked eagerly (:mod:`fsgld_optax.bayes` raises on bad inputs), then
  scored in one compiled function.
  """
  bayes.brier(probs[:1], labels[:1])  # the argument checks, on a row (the whole under jit)
  bayes.predictive_entropy(ood_probs[:1])
  if labels.min() < 0 or labels.max() >= probs.shape[1]:
    raise ValueError(f"labels must lie in [0, {probs.shape[1]}).")
  values = _score(jnp.asarray(probs), jnp.asarray(labels), jnp.asarray(ood_probs), num_bins)
  return {k: float(v) for k, v in values.items()}


def _mean_std(values: Sequence[float]) -> dict[str, Any]:
  array = np.asarray(values, np.float64)
  std = float(array.std(ddof=1)) if array.size > 1 else 0.0
  return {"mean": float(array.mean()), "std": std}


def paired(values: Sequence[float], baseline: Sequence[float]) -> dict[str, Any]:
  """Mean paired difference with a 95% t interval over seeds."""
  import scipy.stats

  diff = np.asarray(values, np.float64) - np.asarray(baseline, np.float64)
  n = diff.size
  mean = float(diff.mean())
  if n < 2:
    return {"mean": mean, "low": math.nan, "high": math.nan}
  half = float(scipy.stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / math.sqrt(n))
  return {"mean": mean, "low": mean - half, "high": mean + half}


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------


def mnist1d_setup(config: Config, problem: Problem) -> Setup:
  steps = len(problem.x_train) // config.batch_size
  if config.max_steps_per_epoch is not None:
    steps = min(steps, config.max_steps_per_epoch)
  return Setup(
    model=models.CNN1D(problem.num_classes, features=config.cnn_features),
    batch_size=config.batch_size,
    steps_per_epoch=steps,
    cycles=config.cycles,
    epochs_per_cycle=config.epochs_per_cycle,
    samples_per_cycle=config.samples_per_cycle,
    exploration_fraction=config.exploration_fraction,
    weight_decay=config.weight_decay,
    momentum=config.momentum,
  )


def search(trainer: Trainer, config: Config, bar: Any) -> tuple[dict[str, dict], list[dict]]:
  """Hyperparameters by validation NLL on the search seed (see the module docstring)."""
  problem = trainer.problem
  log: list[dict] = []

  def val_nll(method: str, hparams: dict[str, Any]) -> float:
    bar.set_postfix_str(f"search {method} {hparams}")
    try:
      out = trainer.run(method, hparams, config.search_seed, problem.x_val, problem.y_val, bar)
    except ValueError as error:  # a diverged run predicts NaN
      log.append({"method": method, "hparams": hparams, "val_nll": None, "error": str(error)})
      bar.write(f"search {method} {hparams}: failed ({error})")
      return math.inf
    probs = out.probs
    value = float(-np.mean(np.log(probs[np.arange(len(probs)), problem.y_val])))
    acc = float(np.mean(probs.argmax(1) == problem.y_val))
    log.append({"method": method, "hparams": hparams, "val_nll": value, "val_accuracy": acc})
    bar.write(f"search {method} {hparams}: validation NLL {value:.4f}, accuracy {acc:.3f}")
    return value

  def best(method: str, candidates: list[dict[str, Any]]) -> dict[str, Any]:
    if len(candidates) == 1:  # nothing to choose
      return candidates[0]
    values = [val_nll(method, c) for c in candidates]
    return candidates[int(np.nanargmin(values))]

  sgd = best("sgd", [{"lr": lr} for lr in config.sgd_lr_grid])
  csgld = best(
    "csgld",
    [
      {"lr": lr, "temperature": t} for lr in config.sampler_lr_grid for t in config.temperature_grid
    ],
  )
  cfsgld = best("cfsgld", [csgld | {"sigma": s} for s in config.sigma_grid])
  selected = {
    "sgd": sgd,
    "ensemble": sgd,
    "csgld": csgld,
    "cfsgld": cfsgld,
    "csghmc": csgld,
    "cfsghmc": cfsgld,
  }
  return selected, log


def search_runs(config: Config) -> int:
  sizes = (
    len(config.sgd_lr_grid),
    len(config.sampler_lr_grid) * len(config.temperature_grid),
    len(config.sigma_grid),
  )
  return sum(n for n in sizes if n > 1)


def describe(method: str, hparams: dict[str, Any], momentum: float) -> str:
  if method in ("sgd", "ensemble"):
    return f"λ={hparams['lr']:g} (cosine), m={momentum:g}"
  lr = hparams["lr"] * (1 - momentum) if method in ("csghmc", "cfsghmc") else hparams["lr"]
  parts = [f"λ₀={lr:.3g}", f"T={hparams['temperature']:g}"]
  if method in ("csghmc", "cfsghmc"):
    parts.append(f"m={momentum:g}")
  if "sigma" in hparams:
    sigma = hparams["sigma"]
    parts.append("σ coupled to β" if sigma is None else f"σ={sigma:g}")
  return ", ".join(parts)


def evaluate_methods(
  trainer: Trainer,
  methods: Sequence[str],
  selected: dict[str, dict],
  seeds: Sequence[int],
  num_bins: int,
  bar: Any,
) -> dict[str, Any]:
  """Final runs: per-method metrics per seed, summaries, pooled calibration, diagnostics."""
  problem = trainer.problem
  x_eval = np.concatenate([problem.x_test, problem.x_ood])
  n_test = len(problem.y_test)
  summary: dict[str, Any] = {}
  for method in methods:
    runs, pooled, chains = [], [], []
    for seed in seeds:
      bar.set_postfix_str(f"{method} seed {seed}")
      out = trainer.run(method, selected[method], seed, x_eval, problem.y_test, bar)
      metrics = score(out.probs[:n_test], problem.y_test, out.probs[n_test:], num_bins)
      runs.append({"seed": seed, **metrics, "samples": out.num_samples, "seconds": out.seconds})
      pooled.append(out.probs[:n_test])
      chains.append(out.p_true)
      bar.write(
        f"{method} seed {seed}: "
        + ", ".join(f"{k} {metrics[k]:.4f}" for k in METRICS)
        + f" ({out.num_samples} samples, {out.seconds:.0f} s)"
      )
    bins = jax.jit(bayes.calibration_bins, static_argnames="num_bins")(
      np.concatenate(pooled), np.tile(problem.y_test, len(seeds)), num_bins=num_bins
    )
    entry: dict[str, Any] = {
      "hparams": selected[method],
      "hparams_text": describe(method, selected[method], trainer.setup.momentum),
      **{k: _mean_std([r[k] for r in runs]) for k in METRICS},
      "runs": runs,
      "calibration_bins": {
        "edges": np.asarray(bins.edges).tolist(),
        "count": np.asarray(bins.count).tolist(),
        "confidence": np.nan_to_num(np.asarray(bins.confidence), nan=-1.0).tolist(),
        "accuracy": np.nan_to_num(np.asarray(bins.accuracy), nan=-1.0).tolist(),
      },
    }
    draws = np.stack(chains)  # (chains, samples, test inputs)
    if method in SAMPLERS and draws.shape[0] >= 2 and draws.shape[1] >= 4:
      rhat = np.asarray(jax.jit(bayes.rhat)(draws))
      ess = np.asarray(jax.jit(bayes.effective_sample_size)(draws))
      entry["function_space"] = {
        "rhat_median": float(np.nanmedian(rhat)),
        "rhat_q90": float(np.nanquantile(rhat, 0.9)),
        "ess_bulk_median": float(np.nanmedian(ess)),
        "draws": int(draws.shape[0] * draws.shape[1]),
      }
    summary[method] = entry
  pairs = {}
  for a, b in PAIRS:
    if a in summary and b in summary:
      pairs[f"{a}-{b}"] = {
        k: paired([r[k] for r in summary[a]["runs"]], [r[k] for r in summary[b]["runs"]])
        for k in METRICS
      }
  return {"summary": summary, "paired": pairs}


def run(config: Config, *, progress: bool = True) -> dict[str, Any]:
  """Runs the search and the final runs on MNIST-1D; returns JSON-ready results."""
  start = time.perf_counter()
  problem = mnist1d_problem(config)
  setup = mnist1d_setup(config, problem)
  trainer = Trainer(problem, setup)
  per_run = setup.total_steps
  total = (search_runs(config) + len(METHODS) * len(config.seeds)) * per_run
  bar = tqdm(total=total, desc="bayesian", unit="step", disable=not progress)
  try:
    selected, log = search(trainer, config, bar)
    final = evaluate_methods(trainer, METHODS, selected, config.seeds, config.num_bins, bar)
  finally:
    bar.close()
  return {
    "benchmark": "bayesian",
    "config": dataclasses.asdict(config),
    "data": _describe_problem(problem, setup),
    **final,
    "search": log,
    "environment": _report.environment(),
    "wall_time_s": time.perf_counter() - start,
  }


def check(
  recorded: dict[str, Any], *, quick: bool = False, progress: bool = True
) -> list[_report.Check]:
  """Retrains the first recorded seed of every method and compares its metrics (module doc)."""
  config = _report.config_from_json(Config, recorded["config"])
  problem = mnist1d_problem(config)
  trainer = Trainer(problem, mnist1d_setup(config, problem))
  seed, n_test = config.seeds[0], len(problem.y_test)
  x_eval = np.concatenate([problem.x_test, problem.x_ood])
  methods = [m for m in METHODS if not quick or m in ("sgd", "cfsgld")]
  checks = []
  for method in tqdm(methods, desc="check", disable=not progress):
    entry = recorded["summary"][method]
    run_record = next(r for r in entry["runs"] if r["seed"] == seed)
    out = trainer.run(method, entry["hparams"], seed, x_eval, problem.y_test)
    metrics = score(out.probs[:n_test], problem.y_test, out.probs[n_test:], config.num_bins)
    checks += [
      _report.Check(
        f"{LABELS[method]}, seed {seed}: {METRIC_LABELS[k].split(' (')[0]}",
        run_record[k],
        metrics[k],
        atol=2 * (entry[k]["std"] or 0.0),
      )
      for k in METRICS
    ]
  return checks


def _describe_problem(problem: Problem, setup: Setup) -> dict[str, Any]:
  return {
    "name": problem.name,
    "ood": problem.ood_name,
    "num_classes": problem.num_classes,
    "num_train": len(problem.x_train),
    "num_val": len(problem.x_val),
    "num_test": len(problem.x_test),
    "num_ood": len(problem.x_ood),
    "steps_per_epoch": setup.steps_per_epoch,
    "total_steps": setup.total_steps,
    "cycles": setup.cycles,
    "epochs_per_cycle": setup.epochs_per_cycle,
    "samples_per_cycle": setup.samples_per_cycle,
  }


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def _cell(stat: dict[str, Any], metric: str) -> str:
  scale, digits = (100.0, 1) if metric in PERCENT else (1.0, 3)
  return f"{scale * stat['mean']:.{digits}f} ± {scale * stat['std']:.{digits}f}"


def _interval(stat: dict[str, Any], metric: str) -> str:
  scale, digits = (100.0, 1) if metric in PERCENT else (1.0, 3)
  if math.isnan(stat["low"]):
    return f"{scale * stat['mean']:+.{digits}f}"
  return (
    f"{scale * stat['mean']:+.{digits}f} [{scale * stat['low']:+.{digits}f}, "
    f"{scale * stat['high']:+.{digits}f}]"
  )


def markdown(results: dict[str, Any]) -> str:
  """The Markdown report of :func:`run` (or of the CIFAR command)."""
  d = results["data"]
  summary = results["summary"]
  seeds = [r["seed"] for r in next(iter(summary.values()))["runs"]]
  lines = [
    "## Bayesian deep learning: cyclical SG-MCMC with and without flatness",
    "",
    f"{d['name']} ({d['num_classes']} classes; {d['num_train']} training, {d['num_val']} "
    f"validation, {d['num_test']} test inputs); OOD set: {d['ood']}, {d['num_ood']} inputs. "
    f"Every method takes {d['total_steps']} steps ({d['cycles']} cycles × "
    f"{d['epochs_per_cycle']} epochs × {d['steps_per_epoch']} steps); the samplers keep "
    f"{d['samples_per_cycle']} samples per cycle and average their predicted probabilities. "
    f"Mean ± std over seeds {', '.join(map(str, seeds))} (paired: the same seeds for every "
    "method). OOD detection by the predictive entropy; AUPR with OOD as positive. Lower is "
    "better for NLL, ECE and Brier.",
    "",
    "| method | hyperparameters | " + " | ".join(METRIC_LABELS[m] for m in METRICS) + " |",
    "|---|---|" + "---|" * len(METRICS),
  ]
  for method, s in summary.items():
    cells = " | ".join(_cell(s[m], m) for m in METRICS)
    lines.append(f"| {LABELS[method]} | {s['hparams_text']} | {cells} |")
  if results.get("paired"):
    lines += [
      "",
      "Paired differences (mean over seeds [95% t interval]); an interval that excludes 0 is a "
      "difference the seeds resolve:",
      "",
      "| comparison | " + " | ".join(METRIC_LABELS[m] for m in METRICS) + " |",
      "|---|" + "---|" * len(METRICS),
    ]
    for name, stats in results["paired"].items():
      a, b = name.split("-")
      cells = " | ".join(_interval(stats[m], m) for m in METRICS)
      lines.append(f"| {LABELS[a]} − {LABELS[b]} | {cells} |")
  diag = {m: s["function_space"] for m, s in summary.items() if "function_space" in s}
  if diag:
    lines += [
      "",
      "Function-space convergence across the seeds as chains (rank-normalised split R-hat and "
      "bulk ESS of the predicted probability of the true class, per test input; BlackJAX):",
      "",
      "| sampler | R-hat median | R-hat 90% quantile | bulk ESS median | draws |",
      "|---|---|---|---|---|",
    ]
    for m, s in diag.items():
      lines.append(
        f"| {LABELS[m]} | {s['rhat_median']:.3f} | {s['rhat_q90']:.3f} | "
        f"{s['ess_bulk_median']:.1f} | {s['draws']} |"
      )
  lines += [
    "",
    "![reliability diagrams](bayesian.png)" if results.get("benchmark") == "bayesian" else "",
  ]
  return "\n".join(lines).rstrip() + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
  """Reliability diagrams, one per method, pooled over seeds."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  summary = results["summary"]
  n = len(summary)
  cols = min(n, 3)
  rows = -(-n // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.6 * rows), squeeze=False)
  for ax, (method, s) in zip(axes.flat, summary.items(), strict=False):
    b = s["calibration_bins"]
    count = np.asarray(b["count"])
    bins = bayes.CalibrationBins(
      edges=np.asarray(b["edges"]),  # pyright: ignore[reportArgumentType]
      count=count,  # pyright: ignore[reportArgumentType]
      confidence=np.where(count > 0, b["confidence"], np.nan),  # pyright: ignore[reportArgumentType]
      accuracy=np.where(count > 0, b["accuracy"], np.nan),  # pyright: ignore[reportArgumentType]
    )
    bayes.plot_reliability_diagram(bins=bins, ax=ax, title=LABELS[method])
  for ax in list(axes.flat)[n:]:
    ax.axis("off")
  fig.suptitle(f"Reliability diagrams, {results['data']['name']}, pooled over seeds")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# --------------------------------------------------------------------------------------
# The paper's setting: CIFAR-10/100 with ResNet-18, SVHN as OOD
# --------------------------------------------------------------------------------------


def cifar_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks.bayesian cifar",
    description="The paper's Bayesian setting: ResNet-18 on CIFAR-10/100, SVHN as OOD.",
  )
  parser.add_argument("--data-dir", type=Path, required=True, help="folder with the CIFAR files")
  parser.add_argument("--dataset", choices=("cifar10", "cifar100"), default="cifar10")
  parser.add_argument("--svhn", type=Path, required=True, help="SVHN test_32x32.mat (or folder)")
  parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
  parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
  parser.add_argument("--cycles", type=int, default=4)
  parser.add_argument("--epochs-per-cycle", type=int, default=50)
  parser.add_argument("--samples-per-cycle", type=int, default=4)
  parser.add_argument("--exploration-fraction", type=float, default=0.9)
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--lr", type=float, default=0.5, help="cSGLD/cfSGLD λ₀ (SGHMC: λ₀(1−m))")
  parser.add_argument("--sgd-lr", type=float, default=0.1, help="SGD and ensemble λ")
  parser.add_argument(
    "--temperature",
    type=float,
    default=None,
    help="posterior temperature T, β = N/T (default 1/N, as in Zhang et al.'s code)",
  )
  parser.add_argument(
    "--sigma",
    type=lambda v: None if v == "coupled" else float(v),
    default=0.005,
    help="fSGLD's σ (in the paper's range [1e-3, 1e-2]), or 'coupled': σ = β^-(1+η)/4, η=0.1",
  )
  parser.add_argument("--weight-decay", type=float, default=5e-4)
  parser.add_argument("--momentum", type=float, default=0.9)
  parser.add_argument("--width", type=int, default=64, help="ResNet width (64: standard)")
  parser.add_argument(
    "--model",
    choices=("resnet18", "resnet-mini"),
    default="resnet18",
    help="resnet18 (the paper's) or resnet-mini (one residual block; for smoke runs)",
  )
  parser.add_argument("--no-augment", action="store_true", help="no random crop and flip")
  parser.add_argument("--max-steps-per-epoch", type=int, default=None, help="for smoke runs")
  parser.add_argument(
    "--sample-dir", type=Path, default=None, help="keep samples on disk (orbax), not on device"
  )
  parser.add_argument("--num-bins", type=int, default=15)
  parser.add_argument("--out", type=Path, default=Path("runs") / "bayesian", help="output folder")
  parser.add_argument("--no-progress", action="store_true")
  return parser


def cifar_main(argv: Sequence[str]) -> dict[str, Any]:
  """``python -m benchmarks.bayesian cifar ...``: trains, scores and writes the results."""
  args = cifar_parser().parse_args(argv)
  methods = [m.strip() for m in args.methods.split(",") if m.strip()]
  unknown = sorted(set(methods) - set(METHODS))
  if unknown:
    raise SystemExit(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
  seeds = [int(s) for s in args.seeds.split(",")]
  start = time.perf_counter()
  problem = cifar_problem(args.data_dir, args.dataset, args.svhn, 0.0, 0)
  steps = len(problem.x_train) // args.batch_size
  if args.max_steps_per_epoch is not None:
    steps = min(steps, args.max_steps_per_epoch)
  setup = Setup(
    model=(
      models.resnet18(problem.num_classes, width=args.width)
      if args.model == "resnet18"
      else models.ResNet((1,), models.BasicBlock, problem.num_classes, width=args.width)
    ),
    batch_size=args.batch_size,
    steps_per_epoch=steps,
    cycles=args.cycles,
    epochs_per_cycle=args.epochs_per_cycle,
    samples_per_cycle=args.samples_per_cycle,
    exploration_fraction=args.exploration_fraction,
    weight_decay=args.weight_decay,
    momentum=args.momentum,
    augment=not args.no_augment,
    sample_dir=args.sample_dir,
  )
  temperature = 1.0 / len(problem.x_train) if args.temperature is None else args.temperature
  sampler = {"lr": args.lr, "temperature": temperature}
  selected = {
    "sgd": {"lr": args.sgd_lr},
    "ensemble": {"lr": args.sgd_lr},
    "csgld": sampler,
    "cfsgld": sampler | {"sigma": args.sigma},
    "csghmc": sampler,
    "cfsghmc": sampler | {"sigma": args.sigma},
  }
  trainer = Trainer(problem, setup)
  bar = tqdm(
    total=len(methods) * len(seeds) * setup.total_steps,
    desc=f"bayesian {args.dataset}",
    unit="step",
    disable=args.no_progress,
  )
  try:
    final = evaluate_methods(trainer, methods, selected, seeds, args.num_bins, bar)
  finally:
    bar.close()
  name = f"bayesian_{args.dataset}"
  results = {
    "benchmark": name,
    "config": vars(args) | {"seeds": seeds, "methods": methods},
    "data": _describe_problem(problem, setup),
    **final,
    "environment": _report.environment(),
    "wall_time_s": time.perf_counter() - start,
  }
  results["config"] = {
    k: str(v) if isinstance(v, Path) else v for k, v in results["config"].items()
  }
  paths = _report.write(
    results,
    args.out,
    name,
    markdown,
    plot,
    module="benchmarks.bayesian",
    command="python -m benchmarks.bayesian cifar " + " ".join(argv),
  )
  print(markdown(results))
  print("wrote", ", ".join(str(p) for p in paths))
  return results


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """``python -m benchmarks.bayesian [--quick] [--check] [--out DIR] [--no-progress]``.

  ``python -m benchmarks.bayesian cifar ...`` runs the CIFAR setting (:func:`cifar_parser`).
  """
  args = list(sys.argv[1:] if argv is None else argv)
  if args[:1] == ["cifar"]:
    return cifar_main(args[1:])
  return _report.main(args, sys.modules[__name__])


if __name__ == "__main__":
  main()
