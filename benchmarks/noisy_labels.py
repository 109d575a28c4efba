r"""Noisy labels: clean-test accuracy and flatness of SGD, SAM, SGLD, RWP, fSGLD and fSGHMC.

The paper's main experiment (CIFAR-10N/100N with ResNet-34, 150 epochs) at a scale that
runs on two CPU cores: MNIST-1D (a 1-D CNN) and scikit-learn's digits (an MLP), with
symmetric 40% and pair-flip 30% synthetic label noise on the training set; the test labels
are clean. Nine methods: SGD, SAM, SGLD, RWP and fSGLD without momentum (the paper's
recipe), and SGD, SAM and RWP with heavy-ball momentum 0.9 (SGD-M, SAM-M, RWP-M) next to
fSGHMC (:func:`fsgld_optax.fsghmc`, momentum 0.9), its momentum counterpart.

Protocol (``python -m benchmarks.noisy_labels``; ``--quick`` for a smoke run; ``--check``
to rerun a deterministic subset against the committed results):

1. **Paired seeds.** Every run uses one of the seeds 0–4. A seed fixes the label noise, the
   train/validation split (and for digits the train/test split), the initialisation and
   the batch order, whatever the method (:meth:`Trainer.initial_state` and
   :meth:`Trainer.batches` take no method); it also seeds the method's own noise. So the
   runs of two methods with the same seed differ only by the method, and differences are
   taken seed by seed.
2. **The whole grid.** Every method trains at every learning rate of :data:`LR_GRID`
   crossed with every value of its own parameter (:data:`GRIDS`: SAM's ρ, SGLD's β, RWP's
   σ, fSGLD's and fSGHMC's β with the paper's coupling σ = β^{-(1+η)/4}, η = 0.1, so that
   fSGLD's σ spans RWP's range), with every seed. For the momentum methods λ is the
   effective step λ/(1 − m): they run at λ(1 − m), so that one grid serves all methods.
3. **Selection rule.** For each method the selected cell maximises the *mean over seeds* of
   the final accuracy on the validation split (15% of the training set) against its *noisy*
   labels; ties go to the first cell in grid order (smaller λ, then smaller parameter). The
   test split is never used for selection. Clean labels are not available in practice; for
   symmetric noise the expected noisy accuracy is an increasing affine function of the
   clean accuracy, (1 − r)·acc + r(1 − acc)/(K − 1), so both rank models the same way (for
   pair-flip noise at r < 1/2 too, unless a model predicts the flipped class
   systematically). Averaging over five seeds before choosing makes the choice robust to
   the seed-to-seed and machine-to-machine noise that flipped single-seed selections.
4. **Paired differences.** For fSGLD − SGD, fSGLD − SAM, fSGLD − RWP, fSGLD − SGLD and
   the momentum counterparts fSGHMC − SGD-M, fSGHMC − SAM-M, fSGHMC − RWP-M: the mean of
   the per-seed differences of final clean test accuracy with a 95% Student-t interval,
   mean ± t_{0.975, n−1}·sd/√n over the n paired seeds, at the selected cells and, for each
   learning rate of the grid, between the cells each method selects at that learning rate
   (same rule, restricted to that λ). A conclusion *holds at every learning rate* when its
   interval excludes zero with the same sign at every λ of the grid; otherwise it depends on
   the selection, and the report says so.
5. **Flatness.** For the runs of the selected cells (with ``flatness_per_lr``, also of
   the cells selected at each λ): the Hessian trace (Hutchinson, Rademacher probes) and
   the largest eigenvalue (Lanczos) of the training loss (noisy labels, as trained) on a
   fixed subset of 256 training examples, with BatchNorm in evaluation mode.

Training follows :mod:`benchmarks.train` (the same loss, train steps, optimizers and the
paper's schedule: learning rate ×0.1 after 1/3 and 2/3 of training, weight decay 5e-4, batch
128), with a leaner loop: clean test accuracy and mean training loss after every epoch, the
validation and training accuracies at the end, and one compiled step per (method, cell)
shared by all seeds (each seed's optimizer key lives in its state).

Scale (to fit about 35 minutes on 2 CPU cores): MNIST-1D with a narrower CNN (channels
16-32-64 instead of 32-64-128) and digits with the (128, 128) MLP, both for the epochs in
:data:`DEFAULT`; three learning rates; the parameter grids of :data:`GRIDS`.

Check (``--check``): for the first seed, every method's selected cell in every setting is
retrained for its first :attr:`Config.check_epochs` epochs (same schedule, so the same
trajectory as the recorded run) and its per-epoch training loss and clean test accuracy are
compared with the recorded ones: bitwise on the machine of the recorded run, else within
:data:`CHECK_LOSS_RTOL` and :data:`CHECK_ACC_ATOL`. ``--check --quick`` does the same for
SGD, SAM and fSGLD on the cheapest setting for one epoch (seconds). Writes
``noisy_labels.json``, ``.md`` and ``.png`` to the output folder.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import stats as scipy_stats
from tqdm.auto import tqdm

import fsgld_optax
import fsgld_optax.flax
from benchmarks import _report, data, models
from benchmarks.optimizers import make_optimizer
from benchmarks.train import init_state, make_loss, make_train_step

__all__ = [
  "COMPARISONS",
  "DEFAULT",
  "GRIDS",
  "LR_GRID",
  "METHODS",
  "QUICK",
  "Config",
  "Method",
  "RunResult",
  "Setting",
  "Trainer",
  "check",
  "main",
  "paired_difference",
  "run",
]


@dataclasses.dataclass(frozen=True)
class Method:
  """A compared method.

  Attributes:
    optimizer: its :func:`benchmarks.optimizers.make_optimizer` name.
    label: its name in tables.
    param: the hyperparameter it searches besides λ (``None``: λ only).
    momentum: heavy-ball momentum m; λ of the grid is the effective step λ/(1 − m).
  """

  optimizer: str
  label: str
  param: str | None
  momentum: float = 0.0


MOMENTUM = 0.9
METHODS: dict[str, Method] = {
  "sgd": Method("sgd", "SGD", None),
  "sam": Method("sam", "SAM", "rho"),
  "sgld": Method("sgld", "SGLD", "beta"),
  "rwp": Method("rwp", "RWP", "sigma"),
  "fsgld": Method("fsgld", "fSGLD", "beta"),
  "sgd_momentum": Method("sgd", "SGD-M", None, MOMENTUM),
  "sam_momentum": Method("sam", "SAM-M", "rho", MOMENTUM),
  "rwp_momentum": Method("rwp", "RWP-M", "sigma", MOMENTUM),
  "fsghmc": Method("fsghmc", "fSGHMC", "beta", MOMENTUM),
}
LABELS = {name: m.label for name, m in METHODS.items()}
ETA = 0.1

#: Learning rates (effective steps λ/(1 − m) for the momentum methods) of every method.
LR_GRID = (0.1, 0.2, 0.4)
#: The values of each method's own parameter, crossed with :data:`LR_GRID`.
GRIDS: dict[str, tuple[float, ...]] = {
  "sgd": (),
  "sam": (0.05, 0.2),
  "sgld": (1e5,),
  "rwp": (0.02, 0.04),
  "fsgld": (1e5, 1e6),  # coupled σ ≈ 0.042, 0.022: RWP's range
  "sgd_momentum": (),
  "sam_momentum": (0.05, 0.2),
  "rwp_momentum": (0.02, 0.04),
  "fsghmc": (1e5, 1e6),
}
#: Paired differences reported: (method, baseline).
COMPARISONS = (
  ("fsgld", "sgd"),
  ("fsgld", "sam"),
  ("fsgld", "rwp"),
  ("fsgld", "sgld"),
  ("fsghmc", "sgd_momentum"),
  ("fsghmc", "sam_momentum"),
  ("fsghmc", "rwp_momentum"),
)
SELECTION_RULE = (
  "for each method, the cell (λ and its own parameter) with the highest mean over the seeds "
  "of the final accuracy on the validation split against its noisy labels; ties go to the "
  "first cell in grid order (smaller λ, then smaller parameter); the test split is not used"
)
#: ``--check`` tolerances on another machine (bitwise on the recorded run's machine):
#: relative, on the mean training loss of each of the first epochs, and absolute, on the
#: clean test accuracy after each of them. Measured: see the benchmarks README.
CHECK_LOSS_RTOL = _report.TRAINING_LOSS_RTOL
CHECK_ACC_ATOL = _report.TRAINING_ACC_ATOL

# Streams folded into a seed's key.
_INIT_STREAM, _OPTIMIZER_STREAM, _ORDER_STREAM, _DIAGNOSTICS_STREAM = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class Setting:
  """A dataset with a label-noise model, and how long to train on it."""

  dataset: str
  noise: str
  epochs: int

  @property
  def name(self) -> str:
    return f"{self.dataset} {self.noise}"


@dataclasses.dataclass(frozen=True)
class Config:
  """Settings of the benchmark.

  Attributes:
    settings: (dataset, noise, epochs) combinations.
    methods: keys of :data:`METHODS` compared.
    seeds: paired seeds (every method, every cell).
    lr_grid: learning rates λ (effective steps for the momentum methods).
    grids: per method, values of its own parameter overriding :data:`GRIDS`.
    val_fraction: fraction of the training set held out for validation.
    batch_size: examples per step.
    weight_decay: L2 coefficient w.
    cnn_features: channels of the MNIST-1D CNN.
    max_steps_per_epoch: cap on steps per epoch (quick runs).
    flatness_examples: size of the fixed training subset for the Hessian diagnostics.
    hutchinson_samples: Rademacher probes of the trace estimate.
    lanczos_iterations: Lanczos steps for λmax.
    flatness_per_lr: also measure the flatness of the cells selected at each λ (not only
      of the selected cells); about 4 s per MNIST-1D run on 2 CPU cores.
    confidence: level of the paired-difference intervals.
    check_epochs: epochs rerun by ``--check``.
  """

  settings: tuple[Setting, ...] = (
    Setting("mnist1d", "symmetric:0.4", 30),
    Setting("mnist1d", "pairflip:0.3", 30),
    Setting("digits", "symmetric:0.4", 40),
    Setting("digits", "pairflip:0.3", 40),
  )
  methods: tuple[str, ...] = tuple(METHODS)
  seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
  lr_grid: tuple[float, ...] = LR_GRID
  grids: tuple[tuple[str, tuple[float, ...]], ...] | None = None
  val_fraction: float = 0.15
  batch_size: int = 128
  weight_decay: float = 5e-4
  cnn_features: tuple[int, ...] = (16, 32, 64)
  max_steps_per_epoch: int | None = None
  flatness_examples: int = 256
  hutchinson_samples: int = 8
  lanczos_iterations: int = 12
  flatness_per_lr: bool = False
  confidence: float = 0.95
  check_epochs: int = 2

  def __post_init__(self) -> None:
    unknown = [m for m in self.methods if m not in METHODS]
    if unknown:
      raise ValueError(f"Unknown methods {unknown}; choose from {', '.join(METHODS)}.")
    if len(set(self.seeds)) != len(self.seeds) or not self.seeds:
      raise ValueError(f"seeds must be distinct and non-empty, got {self.seeds}.")

  def grid(self, method: str) -> tuple[float, ...]:
    """The values of ``method``'s own parameter (empty for a method without one)."""
    for name, values in self.grids or ():
      if name == method:
        return tuple(values)
    return GRIDS[method]

  def cells(self, method: str) -> list[dict[str, float]]:
    """Every (λ, parameter) cell of ``method``, in grid order."""
    param = METHODS[method].param
    values = self.grid(method) if param is not None else ()
    if param is None or not values:
      return [{"lr": lr} for lr in self.lr_grid]
    return [{"lr": lr, param: v} for lr in self.lr_grid for v in values]


DEFAULT = Config()
QUICK = Config(
  settings=(Setting("digits", "symmetric:0.4", 2),),
  seeds=(0, 1),
  lr_grid=(0.1, 0.2),
  grids=(
    ("sam", (0.05,)),
    ("sgld", (1e4,)),
    ("rwp", (0.04,)),
    ("fsgld", (1e5,)),
    ("sam_momentum", (0.05,)),
    ("rwp_momentum", (0.04,)),
    ("fsghmc", (1e5,)),
  ),
  max_steps_per_epoch=4,
  flatness_examples=64,
  hutchinson_samples=4,
  lanczos_iterations=6,
  check_epochs=1,
)


def config_from_json(values: dict[str, Any]) -> Config:
  """The :class:`Config` recorded in a results file (``dataclasses.asdict`` of one)."""
  names = {f.name for f in dataclasses.fields(Config)}
  unknown = sorted(set(values) - names)
  if unknown:
    raise ValueError(
      f"The results were produced by another version of this benchmark (config fields "
      f"{unknown} are unknown); regenerate them with `python -m benchmarks.noisy_labels`."
    )
  kwargs: dict[str, Any] = {}
  for key, value in values.items():
    if key == "settings":
      value = tuple(Setting(**s) for s in value)
    elif key == "grids":
      value = None if value is None else tuple((m, tuple(v)) for m, v in value)
    elif isinstance(value, list):
      value = tuple(value)
    kwargs[key] = value
  return Config(**kwargs)


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


def load(setting: Setting, seed: int, val_fraction: float) -> data.Dataset:
  """The dataset of ``setting`` with its noise and validation split for ``seed``."""
  loader = data.load_mnist1d if setting.dataset == "mnist1d" else data.load_digits
  return loader(noise=setting.noise, seed=seed, val_fraction=val_fraction)


def seed_keys(seed: int) -> dict[str, jax.Array]:
  """Independent keys of one seed: initialisation, optimizer, batch order, diagnostics."""
  root = jax.random.key(seed)
  streams = {
    "init": _INIT_STREAM,
    "optimizer": _OPTIMIZER_STREAM,
    "order": _ORDER_STREAM,
    "diagnostics": _DIAGNOSTICS_STREAM,
  }
  return {name: jax.random.fold_in(root, stream) for name, stream in streams.items()}


@dataclasses.dataclass
class RunResult:
  """What one training run leaves behind.

  Attributes:
    test_acc: clean test accuracy after every epoch.
    train_loss_curve: mean training loss of every epoch (at perturbed weights for the
      perturbed methods), as recorded in float32.
    val_acc: final accuracy on the validation split, noisy labels.
    val_clean_acc: final accuracy on the validation split, clean labels.
    noisy_train_acc: final accuracy on the training split against its noisy labels.
    clean_train_acc: final accuracy on the training split against its clean labels.
    train_loss: mean training loss of the last epoch.
    hessian_trace: Hutchinson trace estimate (with ``flatness=True``), else ``None``.
    hessian_trace_stderr: its standard error.
    lambda_max: largest Hessian eigenvalue by Lanczos.
    seconds: wall-clock time of the run, compilation included.
  """

  test_acc: list[float]
  train_loss_curve: list[float]
  val_acc: float
  val_clean_acc: float
  noisy_train_acc: float
  clean_train_acc: float
  train_loss: float
  hessian_trace: float | None = None
  hessian_trace_stderr: float | None = None
  lambda_max: float | None = None
  seconds: float = 0.0

  def summary(self) -> dict[str, Any]:
    return dataclasses.asdict(self) | {
      "final_test_acc": self.test_acc[-1],
      "best_test_acc": max(self.test_acc),
    }


def accuracy(
  predict: Callable[..., Any], state: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 1000
) -> float:
  """Fraction of ``x`` that ``predict`` labels as ``y``; batches padded to one shape."""
  correct = 0
  for start in range(0, len(x), batch_size):
    xb = x[start : start + batch_size]
    size = len(xb)
    if size < batch_size:
      xb = np.concatenate([xb, np.zeros((batch_size - size, *xb.shape[1:]), xb.dtype)])
    labels = np.asarray(predict(state.params, state.batch_stats, xb))[:size]
    correct += int(np.sum(labels == y[start : start + size]))
  return correct / len(x)


class Trainer:
  """Trains the benchmark models, compiling one step per (model, optimizer setting).

  Args:
    config: the benchmark settings (batch size, weight decay, model sizes, diagnostics).
  """

  def __init__(self, config: Config) -> None:
    self.config = config
    self._datasets: dict[tuple[str, str, int], data.Dataset] = {}
    self._steps: dict[tuple[Any, ...], tuple[Any, Callable[..., Any]]] = {}
    self._models: dict[str, Any] = {}
    self._predict: dict[str, Callable[..., Any]] = {}
    self._flatness: dict[str, Callable[..., Any]] = {}

  def dataset(self, setting: Setting, seed: int) -> data.Dataset:
    key = (setting.dataset, setting.noise, seed)
    if key not in self._datasets:
      self._datasets[key] = load(setting, seed, self.config.val_fraction)
    return self._datasets[key]

  def model(self, dataset: str) -> Any:
    """The Linen model of ``dataset``: a 1-D CNN (MNIST-1D) or an MLP (digits)."""
    if dataset not in self._models:
      if dataset == "mnist1d":
        self._models[dataset] = models.CNN1D(10, features=self.config.cnn_features)
      else:
        self._models[dataset] = models.MLP(10)
    return self._models[dataset]

  def predict(self, dataset: str) -> Callable[..., Any]:
    """``predict(params, batch_stats, x) -> labels`` of ``dataset``'s model, eval mode, jitted."""
    if dataset not in self._predict:
      model, has_batch_stats = self.model(dataset), dataset == "mnist1d"

      def predict(params: Any, batch_stats: Any, x: jax.Array) -> jax.Array:
        variables = {"params": params} | ({"batch_stats": batch_stats} if has_batch_stats else {})
        return jnp.argmax(model.apply(variables, x, train=False), axis=-1)

      self._predict[dataset] = jax.jit(predict)
    return self._predict[dataset]

  def steps_per_epoch(self, ds: data.Dataset) -> int:
    steps = len(ds.x_train) // self.config.batch_size
    cap = self.config.max_steps_per_epoch
    return steps if cap is None else min(steps, cap)

  def batches(
    self, setting: Setting, seed: int, epoch: int
  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The mini-batches of ``epoch`` for ``seed``: the same for every method."""
    ds = self.dataset(setting, seed)
    batches = data.iterate_batches(
      seed_keys(seed)["order"], ds.x_train, ds.y_train, self.config.batch_size, epoch=epoch
    )
    for _, batch in zip(range(self.steps_per_epoch(ds)), batches, strict=False):
      yield batch

  def _optimizer_and_step(
    self, setting: Setting, method: str, hparams: dict[str, Any], total_steps: int
  ) -> tuple[Any, Callable[..., Any]]:
    """The optimizer (built with a placeholder key) and the jitted step of a cell."""
    cache_key = (setting.dataset, method, tuple(sorted(hparams.items())), total_steps)
    if cache_key not in self._steps:
      # Compiled once per cell and shared by all seeds: the transformation reads its PRNG
      # key from the optimizer state, never from the closure, so a state initialised by the
      # same optimizer built with another seed's key runs that seed's noise.
      optimizer = self.build_optimizer(method, hparams, total_steps, seed_keys(0)["optimizer"])
      has_batch_stats = setting.dataset == "mnist1d"
      loss_fn = make_loss(self.model(setting.dataset).apply, has_batch_stats)
      n = int(hparams.get("n_perturbations", 1))
      split = bool(hparams.get("split_batch", False))
      step = make_train_step(optimizer, loss_fn, n_perturbations=n, split_batch=split)
      self._steps[cache_key] = (optimizer, jax.jit(step))
    return self._steps[cache_key]

  def build_optimizer(
    self, method: str, hparams: dict[str, Any], total_steps: int, key: jax.Array
  ) -> Any:
    """``method``'s optimizer for a cell: λ(1 − m) for the momentum methods, η coupling."""
    spec = METHODS[method]
    options = {
      k: v for k, v in hparams.items() if k not in ("lr", "n_perturbations", "split_batch")
    }
    if spec.optimizer in ("fsgld", "fsghmc") and "sigma" not in options:
      options["eta"] = ETA
    return make_optimizer(
      spec.optimizer,
      learning_rate=float(hparams["lr"]) * (1.0 - spec.momentum),
      total_steps=total_steps,
      key=key,
      weight_decay=self.config.weight_decay,
      momentum=spec.momentum,
      **options,
    )

  def initial_state(
    self, setting: Setting, method: str, hparams: dict[str, Any], seed: int, total_steps: int
  ) -> fsgld_optax.flax.TrainState:
    """The state a run starts from: the parameters depend on the seed only."""
    keys = seed_keys(seed)
    optimizer, _ = self._optimizer_and_step(setting, method, hparams, total_steps)
    ds = self.dataset(setting, seed)
    state = init_state(self.model(setting.dataset), optimizer, ds.x_train, keys["init"])
    own = self.build_optimizer(method, hparams, total_steps, keys["optimizer"])
    return state.replace(opt_state=own.tx.init(state.params))

  def fit(
    self,
    setting: Setting,
    method: str,
    hparams: dict[str, Any],
    seed: int,
    *,
    epochs: int | None = None,
    stop_after: int | None = None,
    bar: Any = None,
  ) -> tuple[RunResult, fsgld_optax.flax.TrainState]:
    """Trains ``method`` with ``hparams`` on one seed; returns the result and final state.

    Args:
      setting: dataset, noise and epochs.
      method: a key of :data:`METHODS`.
      hparams: ``lr`` and the method's options (``rho``, ``beta``, ``sigma``;
        ``n_perturbations`` and ``split_batch`` for the perturbed methods).
      seed: the paired seed.
      epochs: the length of training and of the schedule (default ``setting.epochs``).
      stop_after: stop after this many epochs, keeping the schedule of ``epochs`` (the
        first epochs of the full run, bit for bit).
      bar: a tqdm bar to advance.
    """
    start = time.perf_counter()
    ds = self.dataset(setting, seed)
    epochs = setting.epochs if epochs is None else epochs
    last = epochs if stop_after is None else min(epochs, stop_after)
    steps_per_epoch = self.steps_per_epoch(ds)
    total_steps = epochs * steps_per_epoch
    _, step = self._optimizer_and_step(setting, method, hparams, total_steps)
    state = self.initial_state(setting, method, hparams, seed, total_steps)
    predict = self.predict(setting.dataset)

    test_acc: list[float] = []
    losses: list[float] = []
    for epoch in range(last):
      loss_sum = jnp.zeros(())
      for xb, yb in self.batches(setting, seed, epoch):
        state, loss = step(state, xb, yb)
        loss_sum = loss_sum + loss
      losses.append(float(loss_sum) / steps_per_epoch)
      test_acc.append(accuracy(predict, state, ds.x_test, ds.y_test))
      if bar is not None:
        bar.update(steps_per_epoch)
    assert ds.x_val is not None and ds.y_val is not None and ds.y_val_clean is not None
    result = RunResult(
      test_acc=test_acc,
      train_loss_curve=losses,
      val_acc=accuracy(predict, state, ds.x_val, ds.y_val),
      val_clean_acc=accuracy(predict, state, ds.x_val, ds.y_val_clean),
      noisy_train_acc=accuracy(predict, state, ds.x_train, ds.y_train),
      clean_train_acc=accuracy(predict, state, ds.x_train, ds.y_train_clean),
      train_loss=losses[-1] if losses else math.nan,
    )
    result.seconds = time.perf_counter() - start
    return result, state

  def measure_flatness(
    self, setting: Setting, seed: int, state: fsgld_optax.flax.TrainState
  ) -> tuple[float, float, float]:
    """``(trace, trace stderr, λmax)`` of a trained state on the seed's flatness subset."""
    ds = self.dataset(setting, seed)
    m = self.config.flatness_examples
    trace, stderr, lam = self.flatness(setting.dataset)(
      state.params,
      state.batch_stats,
      ds.x_train[:m],
      ds.y_train[:m],
      seed_keys(seed)["diagnostics"],
    )
    return float(trace), float(stderr), float(lam)

  def train(
    self,
    setting: Setting,
    method: str,
    hparams: dict[str, Any],
    seed: int,
    *,
    flatness: bool = False,
    epochs: int | None = None,
    bar: Any = None,
  ) -> RunResult:
    """:meth:`fit`, and with ``flatness=True`` the Hessian trace and λmax of the result."""
    result, state = self.fit(setting, method, hparams, seed, epochs=epochs, bar=bar)
    if flatness:
      start = time.perf_counter()
      trace, stderr, lam = self.measure_flatness(setting, seed, state)
      result.hessian_trace, result.hessian_trace_stderr, result.lambda_max = trace, stderr, lam
      result.seconds += time.perf_counter() - start
    return result

  def flatness(self, dataset: str) -> Callable[..., tuple[jax.Array, jax.Array, jax.Array]]:
    """``f(params, batch_stats, x, y, key) -> (trace, trace stderr, λmax)``, jitted.

    The loss is the mean cross-entropy on ``(x, y)`` in evaluation mode (BatchNorm with its
    running statistics), so the Hessian is that of a fixed deterministic function.
    """
    model = self.model(dataset)
    has_batch_stats = dataset == "mnist1d"
    config = self.config

    def fn(params: Any, batch_stats: Any, x: jax.Array, y: jax.Array, key: jax.Array) -> Any:
      variables = {"params": params} | ({"batch_stats": batch_stats} if has_batch_stats else {})

      def loss_fn(p: Any) -> jax.Array:
        logits = model.apply(variables | {"params": p}, x, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

      trace_key, eig_key = jax.random.split(key)
      est = fsgld_optax.diagnostics.hutchinson_trace(
        loss_fn, params, trace_key, num_samples=config.hutchinson_samples
      )
      eig = fsgld_optax.diagnostics.top_eigenvalues(
        loss_fn, params, eig_key, k=1, num_iterations=config.lanczos_iterations
      )
      return est.trace, est.stderr, eig.eigenvalues[0]

    if dataset not in self._flatness:
      self._flatness[dataset] = jax.jit(fn)
    return self._flatness[dataset]


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------


def _mean_std(values: Iterable[float | None]) -> dict[str, float | None]:
  array = np.asarray([v for v in values if v is not None], np.float64)
  if array.size == 0:
    return {"mean": None, "std": None}
  std = float(array.std(ddof=1)) if array.size > 1 else 0.0
  return {"mean": float(array.mean()), "std": std}


def paired_difference(
  a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> dict[str, Any]:
  r"""Mean of ``a − b`` over paired seeds with a Student-t confidence interval.

  .. math::

    \bar d \pm t_{(1+c)/2,\,n-1}\, s_d / \sqrt{n}

  Args:
    a: per-seed values of one method.
    b: the same seeds' values of the other.
    confidence: the level c of the interval.

  Returns:
    ``mean``, ``std`` (of the differences), ``n``, ``low``, ``high`` and ``sign``: ``1`` if
    the interval lies above zero, ``-1`` below, ``0`` if it contains zero.

  Raises:
    ValueError: for unequal lengths or fewer than two pairs.

  Examples:
    >>> d = paired_difference([0.70, 0.72, 0.71], [0.60, 0.61, 0.63])
    >>> round(d["mean"], 4), d["sign"]
    (0.0967, 1)
  """
  x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if x.shape != y.shape or x.ndim != 1:
    raise ValueError(f"a and b must be paired 1-D sequences, got {x.shape} and {y.shape}.")
  n = x.size
  if n < 2:
    raise ValueError(f"a paired interval needs at least two pairs, got {n}.")
  d = x - y
  mean, std = float(d.mean()), float(d.std(ddof=1))
  half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
  low, high = mean - half, mean + half
  return {
    "mean": mean,
    "std": std,
    "n": n,
    "low": low,
    "high": high,
    "sign": 1 if low > 0 else -1 if high < 0 else 0,
  }


def _select(cells: list[dict[str, Any]], indices: Iterable[int]) -> int:
  """The index among ``indices`` with the highest mean validation accuracy (first on ties)."""
  best, best_score = -1, -math.inf
  for i in indices:
    score = cells[i]["stats"]["val_acc"]["mean"]
    if score is not None and score > best_score:
      best, best_score = i, score
  return best


def _comparison(
  cells: dict[str, list[dict[str, Any]]],
  selected: dict[str, int],
  per_lr: dict[str, list[int]],
  lrs: Sequence[float],
  a: str,
  b: str,
  confidence: float,
) -> dict[str, Any]:
  """Paired differences of final test accuracy (and Hessian trace ratios) of ``a`` − ``b``."""

  def diff(i: int, j: int) -> dict[str, Any]:
    ra, rb = cells[a][i]["runs"], cells[b][j]["runs"]
    out = paired_difference(
      [r["final_test_acc"] for r in ra], [r["final_test_acc"] for r in rb], confidence
    )
    ta = [r.get("hessian_trace") for r in ra]
    tb = [r.get("hessian_trace") for r in rb]
    if all(t is not None and t > 0 for t in ta + tb):
      ratios = np.asarray(tb, np.float64) / np.asarray(ta, np.float64)
      out["trace_ratio_geomean"] = float(np.exp(np.mean(np.log(ratios))))
      out["flatter_on_every_seed"] = bool(np.all(ratios > 1))
    return out

  at_lr = [{"lr": lr} | diff(per_lr[a][k], per_lr[b][k]) for k, lr in enumerate(lrs)]
  sel = diff(selected[a], selected[b])
  signs = {d["sign"] for d in at_lr}
  holds = sel["sign"] != 0 and signs == {sel["sign"]}
  return {
    "method": a,
    "baseline": b,
    "selected": sel,
    "per_lr": at_lr,
    "holds_at_every_lr": holds,
    "flatter_on_every_seed": sel.get("flatter_on_every_seed") is True,
    "flatter_at_every_lr": all(d.get("flatter_on_every_seed") is True for d in at_lr),
  }


def _conclusion(c: dict[str, Any]) -> str:
  """One sentence on a comparison: the difference, and whether it holds at every λ."""
  a, b = LABELS[c["method"]], LABELS[c["baseline"]]
  sel = c["selected"]
  text = f"**{a} − {b}: {_diff_text(sel)}** points at the selected cells"
  per_lr = ", ".join(f"λ = {_fmt(d['lr'])}: {_diff_text(d)}" for d in c["per_lr"])
  if c["holds_at_every_lr"]:
    word = "above" if sel["sign"] > 0 else "below"
    text += (
      f"; the interval lies {word} zero at every learning rate of the grid ({per_lr}), so "
      "this conclusion does not depend on the selection"
    )
  elif sel["sign"] == 0 and {d["sign"] for d in c["per_lr"]} == {0}:
    text += f"; no difference resolved at any learning rate ({per_lr})"
  else:
    text += f"; it depends on the learning rate ({per_lr}), i.e. on the selection"
  if "trace_ratio_geomean" in sel:
    text += (
      f". Hessian trace: {b}'s is {sel['trace_ratio_geomean']:.2g}× {a}'s at the selected "
      "cells"
      + (f"; {a} ends flatter on every seed" if c["flatter_on_every_seed"] else "")
      + (", and at every learning rate" if c["flatter_at_every_lr"] else "")
    )
  return text + "."


def _diff_text(d: dict[str, Any]) -> str:
  return f"{100 * d['mean']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------


def describe(method: str, hparams: dict[str, Any]) -> str:
  """A short text for a method's hyperparameters (λ effective for momentum methods)."""
  parts = [f"λ={hparams['lr']:g}"]
  if "rho" in hparams:
    parts.append(f"ρ={hparams['rho']:g}")
  if "beta" in hparams:
    parts.append(f"β={_fmt(hparams['beta'])}")
  if "sigma" in hparams:
    parts.append(f"σ={hparams['sigma']:g}")
  elif METHODS[method].optimizer in ("fsgld", "fsghmc"):
    parts.append(f"σ={float(fsgld_optax.coupled_sigma(hparams['beta'], ETA)):.3f}")
  return ", ".join(parts)


def _param_text(method: str, hparams: dict[str, Any]) -> str:
  param = METHODS[method].param
  if param is None or param not in hparams:
    return "–"
  symbol = {"rho": "ρ", "beta": "β", "sigma": "σ"}[param]
  return f"{symbol}={_fmt(hparams[param])}"


_METRICS = (
  "val_acc",
  "val_clean_acc",
  "final_test_acc",
  "best_test_acc",
  "noisy_train_acc",
  "hessian_trace",
  "lambda_max",
)


def grid_runs(config: Config) -> int:
  """Training runs of one setting: every cell of every method, every seed."""
  return len(config.seeds) * sum(len(config.cells(m)) for m in config.methods)


def run_setting(trainer: Trainer, setting: Setting, config: Config, bar: Any) -> dict[str, Any]:
  """The whole grid of one setting, the selection, flatness and the paired differences."""
  cells: dict[str, list[dict[str, Any]]] = {}
  states: dict[tuple[str, int, int], Any] = {}
  for method in config.methods:
    cells[method] = []
    for i, hparams in enumerate(config.cells(method)):
      runs = []
      for seed in config.seeds:
        bar.set_postfix_str(f"{setting.name} {LABELS[method]} {describe(method, hparams)} {seed}")
        result, state = trainer.fit(setting, method, hparams, seed, bar=bar)
        runs.append({"seed": seed} | result.summary())
        states[method, i, seed] = state
      cells[method].append({"hparams": hparams, "runs": runs})
      cells[method][-1]["stats"] = {m: _mean_std(r[m] for r in runs) for m in _METRICS}
      bar.write(
        f"{setting.name} {LABELS[method]} {describe(method, hparams)}: validation "
        f"{cells[method][-1]['stats']['val_acc']['mean']:.3f} (noisy labels), test "
        f"{cells[method][-1]['stats']['final_test_acc']['mean']:.3f} (mean of "
        f"{len(config.seeds)} seeds)"
      )

  lrs = config.lr_grid
  selected = {m: _select(cells[m], range(len(cells[m]))) for m in config.methods}
  per_lr = {
    m: [
      _select(cells[m], [i for i, c in enumerate(cells[m]) if c["hparams"]["lr"] == lr])
      for lr in lrs
    ]
    for m in config.methods
  }
  # Flatness of the selected cells' runs (and of the per-λ cells' with flatness_per_lr).
  for method in config.methods:
    flat_cells = {selected[method], *(per_lr[method] if config.flatness_per_lr else ())}
    for i in sorted(flat_cells):
      cell = cells[method][i]
      for r in cell["runs"]:
        bar.set_postfix_str(f"{setting.name} {LABELS[method]} flatness seed {r['seed']}")
        trace, stderr, lam = trainer.measure_flatness(
          setting, r["seed"], states[method, i, r["seed"]]
        )
        r.update(hessian_trace=trace, hessian_trace_stderr=stderr, lambda_max=lam)
      for m in ("hessian_trace", "lambda_max"):
        cell["stats"][m] = _mean_std(r[m] for r in cell["runs"])
  del states

  comparisons = [
    _comparison(cells, selected, per_lr, lrs, a, b, config.confidence)
    for a, b in COMPARISONS
    if a in config.methods and b in config.methods and len(config.seeds) > 1
  ]
  summary = {
    m: {
      "hparams": cells[m][selected[m]]["hparams"],
      "hparams_text": describe(m, cells[m][selected[m]]["hparams"]),
      **cells[m][selected[m]]["stats"],
    }
    for m in config.methods
  }
  datasets = [trainer.dataset(setting, s) for s in config.seeds]
  ds = datasets[0]
  return {
    "dataset": setting.dataset,
    "noise": setting.noise,
    "epochs": setting.epochs,
    "steps_per_epoch": trainer.steps_per_epoch(ds),
    "num_train": len(ds.x_train),
    "num_val": 0 if ds.x_val is None else len(ds.x_val),
    "num_test": len(ds.x_test),
    "realised_noise_rate": [d.noise_rate for d in datasets],
    "selected": selected,
    "per_lr": per_lr,
    "summary": summary,
    "comparisons": comparisons,
    "cells": cells,
  }


def run(config: Config, *, progress: bool = True) -> dict[str, Any]:
  """Runs the grid, the selection, the diagnostics and the comparisons; JSON-ready results."""
  start = time.perf_counter()
  trainer = Trainer(config)
  steps = 0
  for setting in config.settings:
    per_run = trainer.steps_per_epoch(trainer.dataset(setting, config.seeds[0]))
    steps += grid_runs(config) * per_run * setting.epochs
  bar = tqdm(total=steps, desc="noisy labels", unit="step", disable=not progress)
  try:
    settings_out = [run_setting(trainer, s, config, bar) for s in config.settings]
  finally:
    bar.close()
  return {
    "benchmark": "noisy_labels",
    "config": dataclasses.asdict(config),
    "methods": {name: dataclasses.asdict(METHODS[name]) for name in config.methods},
    "grids": {m: {"param": METHODS[m].param, "values": config.grid(m)} for m in config.methods},
    "selection_rule": SELECTION_RULE,
    "check_tolerances": {"loss_rtol": CHECK_LOSS_RTOL, "acc_atol": CHECK_ACC_ATOL},
    "settings": settings_out,
    "environment": _report.environment(),
    "wall_time_s": time.perf_counter() - start,
  }


def check(
  recorded: dict[str, Any], *, quick: bool = False, progress: bool = True
) -> list[_report.Check]:
  """Reruns the first epochs of the recorded runs of seed ``seeds[0]`` (module docstring).

  Args:
    recorded: results of :func:`run` (a results file).
    quick: SGD, SAM and fSGLD on the setting with the fewest steps, one epoch.
    progress: show a progress bar.

  Returns:
    One :class:`benchmarks._report.Check` for the training losses and one for the test
    accuracies of every rerun.
  """
  config = config_from_json(recorded["config"])
  trainer = Trainer(config)
  seed = config.seeds[0]
  settings = recorded["settings"]
  methods = list(config.methods)
  epochs = config.check_epochs
  if quick:
    settings = [min(settings, key=lambda s: s["steps_per_epoch"] * s["epochs"])]
    methods = [m for m in ("sgd", "sam", "fsgld") if m in methods]
    epochs = 1
  jobs = [(s, m) for s in settings for m in methods]
  checks = []
  for s, method in tqdm(jobs, desc="check", disable=not progress):
    setting = Setting(s["dataset"], s["noise"], s["epochs"])
    cell = s["cells"][method][s["selected"][method]]
    run_record = next(r for r in cell["runs"] if r["seed"] == seed)
    result, _ = trainer.fit(setting, method, cell["hparams"], seed, stop_after=epochs)
    name = f"{setting.name}, {LABELS[method]} ({describe(method, cell['hparams'])}), seed {seed}"
    span = "epoch 1" if epochs == 1 else f"epochs 1–{epochs}"
    checks += [
      _report.Check(
        f"{name}: train loss, {span}",
        run_record["train_loss_curve"][:epochs],
        result.train_loss_curve,
        rtol=CHECK_LOSS_RTOL,
      ),
      _report.Check(
        f"{name}: test accuracy, {span}",
        run_record["test_acc"][:epochs],
        result.test_acc,
        atol=CHECK_ACC_ATOL,
      ),
    ]
  return checks


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def _pm(stat: dict[str, float | None], scale: float = 1.0, digits: int = 1) -> str:
  if stat["mean"] is None:
    return "–"
  std = stat["std"] or 0.0
  return f"{scale * stat['mean']:.{digits}f} ± {scale * std:.{digits}f}"


def _fmt(value: float) -> str:
  """``0.05`` -> ``0.05``, ``1e5`` -> ``1e5``."""
  if abs(value) < 1e3:
    return f"{value:g}"
  mantissa, exponent = f"{value:.2g}".split("e")  # always an exponent from 1e3 on
  return f"{mantissa}e{int(exponent)}"


def _grid_table(s: dict[str, Any], lrs: Sequence[float]) -> list[str]:
  lines = [
    "| method | " + " | ".join(f"λ = {_fmt(lr)}" for lr in lrs) + " |",
    "|---|" + "---|" * len(lrs),
  ]
  for method, cells in s["cells"].items():
    row = []
    for lr in lrs:
      entries = []
      for i, c in enumerate(cells):
        if c["hparams"]["lr"] != lr:
          continue
        st = c["stats"]
        text = f"{100 * st['val_acc']['mean']:.1f} / {100 * st['final_test_acc']['mean']:.1f}"
        if i == s["selected"][method]:
          text = f"**{text}**"
        param = _param_text(method, c["hparams"])
        entries.append(text if param == "–" else f"{param}: {text}")
      row.append("<br>".join(entries))
    lines.append(f"| {LABELS[method]} | " + " | ".join(row) + " |")
  return lines


def markdown(results: dict[str, Any]) -> str:
  """The Markdown report of :func:`run`'s results."""
  c = results["config"]
  lrs = c["lr_grid"]
  seeds = ", ".join(str(s) for s in c["seeds"])
  level = f"{100 * c['confidence']:g}%"
  lines = [
    "## Noisy labels",
    "",
    f"Every method trains at every cell of its grid (λ × its own parameter) with the paired "
    f"seeds {seeds} (a seed fixes the label noise, the splits, the initialisation and the "
    "batch order for every method). Selection rule: "
    + results["selection_rule"]
    + ". Reported: clean test accuracy (%) at the final and the best epoch (the best epoch "
    "peeks at the test set; shown only because noisy-label papers often report it), "
    "accuracy on the noisy training labels (memorisation), and the flatness of the final "
    f"models: Hessian trace (Hutchinson, {c['hutchinson_samples']} probes) and λmax "
    f"(Lanczos, {c['lanczos_iterations']} steps) of the training loss on a fixed subset of "
    f"{c['flatness_examples']} training examples, BatchNorm in evaluation mode. Mean ± std "
    f"over seeds; paired differences with {level} Student-t intervals over the seeds. "
    "For SGD-M, SAM-M, RWP-M and fSGHMC (momentum 0.9) λ is the effective step λ/(1 − m).",
    "",
  ]
  for s in results["settings"]:
    lines += [
      f"### {s['dataset']}, {s['noise']} noise",
      "",
      f"{s['num_train']} training / {s['num_val']} validation / {s['num_test']} test examples, "
      f"{s['epochs']} epochs × {s['steps_per_epoch']} steps; realised noise rate "
      f"{min(s['realised_noise_rate']):.3f}–{max(s['realised_noise_rate']):.3f} over the seeds.",
      "",
      "| method | selected | val acc (noisy) | final test acc | best test acc | "
      "noisy-train acc | Hessian trace | λmax |",
      "|---|---|---|---|---|---|---|---|",
    ]
    for method, r in s["summary"].items():
      lines.append(
        f"| {LABELS[method]} | {describe(method, r['hparams'])} | {_pm(r['val_acc'], 100)} | "
        f"{_pm(r['final_test_acc'], 100)} | {_pm(r['best_test_acc'], 100)} | "
        f"{_pm(r['noisy_train_acc'], 100)} | {_pm(r['hessian_trace'])} | "
        f"{_pm(r['lambda_max'])} |"
      )
    if s["comparisons"]:
      lines += [
        "",
        f"Paired differences of final clean test accuracy (points, mean [{level} interval]), "
        "at the selected cells and between the cells each method selects at one λ:",
        "",
        "| difference | selected | " + " | ".join(f"λ = {_fmt(lr)}" for lr in lrs) + " |",
        "|---|---|" + "---|" * len(lrs),
      ]
      for comp in s["comparisons"]:
        lines.append(
          f"| {LABELS[comp['method']]} − {LABELS[comp['baseline']]} | "
          f"{_diff_text(comp['selected'])} | "
          + " | ".join(_diff_text(d) for d in comp["per_lr"])
          + " |"
        )
      lines += ["", *(f"- {_conclusion(comp)}" for comp in s["comparisons"])]
    lines += [
      "",
      "The whole grid: mean validation accuracy (noisy labels) / mean final clean test "
      "accuracy (%), selected cell in bold.",
      "",
      *_grid_table(s, lrs),
      "",
    ]
  lines += [
    f"Wall time {results['wall_time_s'] / 60:.1f} min ({results['environment']['backend']}).",
    "",
  ]
  return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
  """Selected final test accuracy, paired differences, and Hessian trace per setting."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  settings = results["settings"]
  fig, axes = plt.subplots(3, len(settings), figsize=(5.2 * len(settings), 11), squeeze=False)
  for j, s in enumerate(settings):
    methods = list(s["summary"])
    x = np.arange(len(methods))
    colors = [f"C{i}" for i in range(len(methods))]
    for row, metric, scale, ylabel in (
      (0, "final_test_acc", 100, "final clean test acc (%)"),
      (2, "hessian_trace", 1, "Hessian trace"),
    ):
      ax = axes[row, j]
      means = [scale * (s["summary"][m][metric]["mean"] or 0.0) for m in methods]
      stds = [scale * (s["summary"][m][metric]["std"] or 0.0) for m in methods]
      ax.bar(x, means, yerr=stds, capsize=3, color=colors)
      for i, m in enumerate(methods):
        runs = s["cells"][m][s["selected"][m]]["runs"]
        values = [scale * (r.get(metric) or 0.0) for r in runs]
        ax.plot(np.full(len(values), x[i]), values, "k.", ms=3)
      ax.set_xticks(x, [LABELS[m] for m in methods], rotation=45, fontsize=8)
      ax.set_ylabel(ylabel)
      if row == 0:
        ax.set_title(f"{s['dataset']}, {s['noise']} (selected cells)")
        ax.set_ylim(max(0.0, min(means) - 2 * max(stds) - 5), None)
      elif all(v > 0 for v in means):
        ax.set_yscale("log")
    ax = axes[1, j]
    comps = s["comparisons"]
    for k, comp in enumerate(comps):
      points = [("selected", comp["selected"])]
      points += [(f"λ={_fmt(d['lr'])}", d) for d in comp["per_lr"]]
      for q, (label, d) in enumerate(points):
        offset = (q - (len(points) - 1) / 2) * 0.15
        err = [[100 * (d["mean"] - d["low"])], [100 * (d["high"] - d["mean"])]]
        ax.errorbar(
          k + offset,
          100 * d["mean"],
          yerr=err,
          fmt="o" if q == 0 else ".",
          color=f"C{q}",
          capsize=2,
          label=label if k == 0 else None,
        )
    ax.axhline(0.0, color="k", lw=0.8)
    names = [f"{LABELS[c['method']]}−{LABELS[c['baseline']]}" for c in comps]
    ax.set_xticks(np.arange(len(comps)), names, rotation=45, fontsize=8)
    ax.set_ylabel("paired difference, test acc (points)")
    if comps:
      ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """``python -m benchmarks.noisy_labels [--quick] [--check] [--out DIR] [--no-progress]``."""
  results = _report.main(argv, sys.modules[__name__])
  if "settings" in results and not all(
    math.isfinite(r["final_test_acc"]["mean"] or 0.0)
    for s in results["settings"]
    for r in s["summary"].values()
  ):
    print("warning: a run diverged")
  return results


if __name__ == "__main__":
  main()
