r"""Noisy labels: clean-test accuracy and flatness of SGD, SAM, SGLD, RWP and fSGLD.

The paper's main experiment (CIFAR-10N/100N with ResNet-34, 150 epochs) at a scale that
runs on two CPU cores: MNIST-1D (a 1-D CNN) and scikit-learn's digits (an MLP), each with
symmetric 40% and pair-flip 30% synthetic label noise on the training set; the test labels
are clean.

Protocol (``python -m benchmarks.noisy_labels``; ``--quick`` for a smoke run):

1. **Search.** For every (dataset, noise) setting, on a separate search seed, a small grid is
   trained on the training split and scored by the final-epoch accuracy on a held-out
   validation split (15% of the training set) with its *noisy* labels: clean labels are not
   available in practice, and for symmetric noise the expected noisy accuracy is an
   increasing affine function of the clean accuracy, (1 − r)·acc + r(1 − acc)/(K − 1), so
   it ranks models the same way (for pair-flip noise at r < 1/2 it ranks them the same way
   unless a model predicts the flipped class systematically). The test split is never used
   for selection. First SGD's learning rate is chosen from :data:`LR_GRID`; every other
   method then uses that learning rate and searches its own parameter (:data:`GRIDS`): SAM's
   ρ, SGLD's β, RWP's σ, and fSGLD's β with the paper's coupling σ = β^{-(1+η)/4}, η = 0.1
   (so the fSGLD and RWP grids cover the same σ; RWP is fSGLD without Langevin noise).
2. **Final runs.** The selected setting of every method is trained with seeds 0, 1, 2 (each
   seed changes the label noise, the validation split, the initialisation, the batch order
   and the optimizer's noise; all methods see the same data for a seed). Reported: clean
   test accuracy mean ± std over seeds at the final epoch and at the best epoch (the best
   epoch peeks at the test set and is shown only because noisy-label papers often report
   it), and the accuracy on the noisy training labels (memorisation).
3. **Flatness.** For every final model: the Hessian trace (Hutchinson, Rademacher probes)
   and the largest eigenvalue (Lanczos) of the training loss (noisy labels, as trained) on a
   fixed subset of 256 training examples, with BatchNorm in evaluation mode.

Training follows :mod:`benchmarks.train` (the same loss, train steps, optimizers and the
paper's schedule: learning rate ×0.1 after 1/3 and 2/3 of training, weight decay 5e-4, batch
128, no momentum), with a leaner loop: test accuracy after every epoch, the validation and
training accuracies at the end only, and one compiled step per hyperparameter setting
shared by all seeds (each seed's optimizer key lives in its state).

Reduced scale (to fit about 30 minutes on 2 CPU cores): MNIST-1D with a narrower CNN
(channels 16-32-64 instead of 32-64-128) for 40 epochs, digits with the (128, 128) MLP for
40 epochs, grids of three values, one search seed. Writes ``noisy_labels.json``, ``.md`` and
``.png`` to the output folder.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
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
from benchmarks.optimizers import OPTIMIZERS, make_optimizer
from benchmarks.train import init_state, make_loss, make_train_step

__all__ = [
  "GRIDS",
  "LR_GRID",
  "Config",
  "RunResult",
  "Trainer",
  "main",
  "run",
]


METHODS = OPTIMIZERS  # ("sgd", "sam", "sgld", "rwp", "fsgld")
LABELS = {"sgd": "SGD", "sam": "SAM", "sgld": "SGLD", "rwp": "RWP", "fsgld": "fSGLD"}
ETA = 0.1

#: SGD learning rates searched first; the other methods use the selected one.
LR_GRID = (0.1, 0.2, 0.4)
#: The parameter each method searches at the selected learning rate.
GRIDS: dict[str, tuple[str, tuple[float, ...]]] = {
  "sgd": ("lr", LR_GRID),
  "sam": ("rho", (0.05, 0.1, 0.2)),
  "sgld": ("beta", (1e3, 1e4, 1e5)),
  "rwp": ("sigma", (0.02, 0.04, 0.08)),
  "fsgld": ("beta", (1e4, 1e5, 1e6)),  # coupled σ ≈ 0.079, 0.042, 0.022
}

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
    methods: optimizers compared.
    seeds: seeds of the final runs.
    search_seed: seed of the hyperparameter search (never one of ``seeds``).
    lr_grid: SGD learning rates searched.
    grids: per method, the searched parameter and its values (``None``: :data:`GRIDS`).
    val_fraction: fraction of the training set held out for validation.
    batch_size: examples per step.
    weight_decay: L2 coefficient w.
    cnn_features: channels of the MNIST-1D CNN.
    max_steps_per_epoch: cap on steps per epoch (quick runs).
    flatness_examples: size of the fixed training subset for the Hessian diagnostics.
    hutchinson_samples: Rademacher probes of the trace estimate.
    lanczos_iterations: Lanczos steps for λmax.
  """

  settings: tuple[Setting, ...] = (
    Setting("mnist1d", "symmetric:0.4", 40),
    Setting("mnist1d", "pairflip:0.3", 40),
    Setting("digits", "symmetric:0.4", 40),
    Setting("digits", "pairflip:0.3", 40),
  )
  methods: tuple[str, ...] = METHODS
  seeds: tuple[int, ...] = (0, 1, 2)
  search_seed: int = 1000
  lr_grid: tuple[float, ...] = LR_GRID
  grids: tuple[tuple[str, str, tuple[float, ...]], ...] | None = None
  val_fraction: float = 0.15
  batch_size: int = 128
  weight_decay: float = 5e-4
  cnn_features: tuple[int, ...] = (16, 32, 64)
  max_steps_per_epoch: int | None = None
  flatness_examples: int = 256
  hutchinson_samples: int = 8
  lanczos_iterations: int = 12

  def grid(self, method: str) -> tuple[str, tuple[float, ...]]:
    if method == "sgd":
      return "lr", self.lr_grid
    if self.grids is not None:
      for name, param, values in self.grids:
        if name == method:
          return param, values
    return GRIDS[method]


DEFAULT = Config()
QUICK = Config(
  settings=(Setting("digits", "symmetric:0.4", 3),),
  seeds=(0, 1),
  lr_grid=(0.1,),
  grids=(
    ("sam", "rho", (0.05,)),
    ("sgld", "beta", (1e4,)),
    ("rwp", "sigma", (0.04,)),
    ("fsgld", "beta", (1e5,)),
  ),
  cnn_features=(8, 16),
  max_steps_per_epoch=6,
  flatness_examples=64,
  hutchinson_samples=4,
  lanczos_iterations=6,
)


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
    val_acc: final accuracy on the validation split, noisy labels.
    val_clean_acc: final accuracy on the validation split, clean labels.
    noisy_train_acc: final accuracy on the training split against its noisy labels.
    clean_train_acc: final accuracy on the training split against its clean labels.
    train_loss: mean training loss of the last epoch (at perturbed weights for rwp/fsgld).
    hessian_trace: Hutchinson trace estimate (with ``flatness=True``), else ``None``.
    hessian_trace_stderr: its standard error.
    lambda_max: largest Hessian eigenvalue by Lanczos.
    seconds: wall-clock time of the run, compilation included.
  """

  test_acc: list[float]
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
    """Trains ``method`` with ``hparams`` (``lr`` and optimizer options) on one seed.

    ``hparams`` may hold ``lr``, ``beta``, ``sigma``, ``rho``, ``n_perturbations`` and
    ``split_batch`` (the last two for ``rwp``/``fsgld``).
    """
    start = time.perf_counter()
    ds = self.dataset(setting, seed)
    epochs = setting.epochs if epochs is None else epochs
    steps_per_epoch = self.steps_per_epoch(ds)
    total_steps = epochs * steps_per_epoch
    keys = seed_keys(seed)
    model = self.model(setting.dataset)
    has_batch_stats = setting.dataset == "mnist1d"
    options = {
      k: v for k, v in hparams.items() if k not in ("lr", "n_perturbations", "split_batch")
    }
    if method == "fsgld" and "sigma" not in options:
      options["eta"] = ETA
    n = int(hparams.get("n_perturbations", 1))
    split = bool(hparams.get("split_batch", False))

    def build(key: jax.Array) -> Any:
      return make_optimizer(
        method,
        learning_rate=float(hparams["lr"]),
        total_steps=total_steps,
        key=key,
        weight_decay=self.config.weight_decay,
        **options,
      )

    cache_key = (
      setting.dataset,
      tuple(ds.x_train.shape[1:]),
      method,
      tuple(sorted(hparams.items())),
      total_steps,
    )
    if cache_key not in self._steps:
      # Compiled once per setting and shared by all seeds: the transformation reads its
      # PRNG key from the optimizer state, never from the closure, so a state initialised
      # by the same optimizer built with another seed's key runs that seed's noise.
      optimizer = build(keys["optimizer"])
      loss_fn = make_loss(model.apply, has_batch_stats)
      step = make_train_step(optimizer, loss_fn, n_perturbations=n, split_batch=split)
      self._steps[cache_key] = (optimizer, jax.jit(step))
    optimizer, step = self._steps[cache_key]
    state = init_state(model, optimizer, ds.x_train, keys["init"])
    state = state.replace(opt_state=build(keys["optimizer"]).tx.init(state.params))
    predict = self.predict(setting.dataset)

    test_acc = []
    loss_sum = jnp.zeros(())
    for epoch in range(epochs):
      batches = data.iterate_batches(
        keys["order"], ds.x_train, ds.y_train, self.config.batch_size, epoch=epoch
      )
      loss_sum = jnp.zeros(())
      for _, (xb, yb) in zip(range(steps_per_epoch), batches, strict=False):
        state, loss = step(state, xb, yb)
        loss_sum = loss_sum + loss
      test_acc.append(accuracy(predict, state, ds.x_test, ds.y_test))
      if bar is not None:
        bar.update(steps_per_epoch)
    assert ds.x_val is not None and ds.y_val is not None and ds.y_val_clean is not None
    result = RunResult(
      test_acc=test_acc,
      val_acc=accuracy(predict, state, ds.x_val, ds.y_val),
      val_clean_acc=accuracy(predict, state, ds.x_val, ds.y_val_clean),
      noisy_train_acc=accuracy(predict, state, ds.x_train, ds.y_train),
      clean_train_acc=accuracy(predict, state, ds.x_train, ds.y_train_clean),
      train_loss=float(loss_sum) / steps_per_epoch,
    )
    if flatness:
      m = self.config.flatness_examples
      trace, stderr, lam = self.flatness(setting.dataset)(
        state.params, state.batch_stats, ds.x_train[:m], ds.y_train[:m], keys["diagnostics"]
      )
      result.hessian_trace = float(trace)
      result.hessian_trace_stderr = float(stderr)
      result.lambda_max = float(lam)
    result.seconds = time.perf_counter() - start
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
# The benchmark
# --------------------------------------------------------------------------------------


def describe(method: str, hparams: dict[str, Any]) -> str:
  """A short text for a method's selected hyperparameters."""
  parts = [f"λ={hparams['lr']:g}"]
  if "rho" in hparams:
    parts.append(f"ρ={hparams['rho']:g}")
  if "beta" in hparams:
    parts.append(f"β={_fmt(hparams['beta'])}")
  if "sigma" in hparams:
    parts.append(f"σ={hparams['sigma']:g}")
  elif method == "fsgld":
    parts.append(f"σ={float(fsgld_optax.coupled_sigma(hparams['beta'], ETA)):.3f}")
  return ", ".join(parts)


def _mean_std(values: Iterable[float | None]) -> dict[str, float | None]:
  array = np.asarray([v for v in values if v is not None], np.float64)
  if array.size == 0:
    return {"mean": None, "std": None}
  std = float(array.std(ddof=1)) if array.size > 1 else 0.0
  return {"mean": float(array.mean()), "std": std}


def search(
  trainer: Trainer, setting: Setting, config: Config, bar: Any
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
  """The selected hyperparameters of every method, and the log of all search runs."""
  log: list[dict[str, Any]] = []

  def score(method: str, hparams: dict[str, Any]) -> float:
    bar.set_postfix_str(f"search {setting.name} {method} {describe(method, hparams)}")
    result = trainer.train(setting, method, hparams, config.search_seed, bar=bar)
    log.append({"method": method, "hparams": hparams} | result.summary())
    bar.write(
      f"search {setting.name} {method} {describe(method, hparams)}: validation accuracy "
      f"{result.val_acc:.3f} (noisy labels), {result.val_clean_acc:.3f} (clean)"
    )
    return result.val_acc

  def best(method: str, candidates: list[dict[str, Any]]) -> dict[str, Any]:
    scores = [score(method, h) for h in candidates]
    return candidates[int(np.argmax(scores))]  # ties: the first (smallest) value

  selected = {"sgd": best("sgd", [{"lr": lr} for lr in config.lr_grid])}
  lr = selected["sgd"]["lr"]
  for method in config.methods:
    if method == "sgd":
      continue
    param, values = config.grid(method)
    selected[method] = best(method, [{"lr": lr, param: v} for v in values])
  return selected, log


def search_runs(config: Config) -> int:
  return len(config.lr_grid) + sum(len(config.grid(m)[1]) for m in config.methods if m != "sgd")


def run(config: Config, *, progress: bool = True) -> dict[str, Any]:
  """Runs the search, the final runs and the diagnostics; returns JSON-ready results."""
  start = time.perf_counter()
  trainer = Trainer(config)
  steps = 0
  for setting in config.settings:
    per_run = trainer.steps_per_epoch(trainer.dataset(setting, config.search_seed))
    runs = search_runs(config) + len(config.methods) * len(config.seeds)
    steps += runs * per_run * setting.epochs
  bar = tqdm(total=steps, desc="noisy labels", unit="step", disable=not progress)
  settings_out = []
  try:
    for setting in config.settings:
      selected, log = search(trainer, setting, config, bar)
      finals: dict[str, list[dict[str, Any]]] = {}
      for method in config.methods:
        finals[method] = []
        for seed in config.seeds:
          bar.set_postfix_str(f"{setting.name} {method} seed {seed}")
          result = trainer.train(setting, method, selected[method], seed, flatness=True, bar=bar)
          finals[method].append({"seed": seed} | result.summary())
          bar.write(
            f"{setting.name} {method} seed {seed}: test accuracy {result.test_acc[-1]:.3f} "
            f"(best {max(result.test_acc):.3f}), Hessian trace {result.hessian_trace:.3g}, "
            f"λmax {result.lambda_max:.3g}"
          )
      summary = {}
      for method, runs in finals.items():
        summary[method] = {
          "hparams": selected[method],
          "hparams_text": describe(method, selected[method]),
          **{
            metric: _mean_std(r[metric] for r in runs)
            for metric in (
              "final_test_acc",
              "best_test_acc",
              "noisy_train_acc",
              "val_clean_acc",
              "hessian_trace",
              "lambda_max",
            )
          },
          "test_acc_curve_mean": np.mean([r["test_acc"] for r in runs], axis=0).tolist(),
        }
      ds = trainer.dataset(setting, config.seeds[0])
      settings_out.append(
        {
          "dataset": setting.dataset,
          "noise": setting.noise,
          "epochs": setting.epochs,
          "steps_per_epoch": trainer.steps_per_epoch(ds),
          "num_train": len(ds.x_train),
          "num_val": 0 if ds.x_val is None else len(ds.x_val),
          "num_test": len(ds.x_test),
          "realised_noise_rate_seed0": ds.noise_rate,
          "summary": summary,
          "runs": finals,
          "search": log,
        }
      )
  finally:
    bar.close()
  return {
    "benchmark": "noisy_labels",
    "config": dataclasses.asdict(config),
    "grids": {m: config.grid(m) for m in config.methods},
    "settings": settings_out,
    "environment": _report.environment(),
    "wall_time_s": time.perf_counter() - start,
  }


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


def markdown(results: dict[str, Any]) -> str:
  """The Markdown report of :func:`run`'s results."""
  c = results["config"]
  grids = results["grids"]
  lines = [
    "## Noisy labels",
    "",
    f"Clean test accuracy (%) over seeds {', '.join(str(s) for s in c['seeds'])} "
    "(mean ± std), at the final and at the best epoch, accuracy on the noisy training labels "
    "(memorisation), and the flatness of the final model: Hessian trace (Hutchinson, "
    f"{c['hutchinson_samples']} probes) and λmax (Lanczos, {c['lanczos_iterations']} steps) of "
    f"the training loss on a fixed subset of {c['flatness_examples']} training examples, "
    "BatchNorm in evaluation mode. Hyperparameters chosen on the noisy validation split "
    f"({c['val_fraction']:.0%} of the training set, search seed {c['search_seed']}).",
    "",
  ]
  for s in results["settings"]:
    lines += [
      f"### {s['dataset']}, {s['noise']} noise",
      "",
      f"{s['num_train']} training / {s['num_val']} validation / {s['num_test']} test examples, "
      f"{s['epochs']} epochs × {s['steps_per_epoch']} steps; realised noise rate "
      f"{s['realised_noise_rate_seed0']:.3f} (seed {c['seeds'][0]}).",
      "",
      "| method | selected | final test acc | best test acc | noisy-train acc | "
      "Hessian trace | λmax |",
      "|---|---|---|---|---|---|---|",
    ]
    for method, r in s["summary"].items():
      lines.append(
        f"| {LABELS[method]} | {describe(method, r['hparams'])} | "
        f"{_pm(r['final_test_acc'], 100)} | {_pm(r['best_test_acc'], 100)} | "
        f"{_pm(r['noisy_train_acc'], 100)} | {_pm(r['hessian_trace'], digits=1)} | "
        f"{_pm(r['lambda_max'], digits=1)} |"
      )
    lines.append("")
  lines += [
    "Search grids (SGD's learning rate first, then each method's parameter at that rate): "
    + "; ".join(
      f"{LABELS[m]} {param} ∈ {{{', '.join(_fmt(v) for v in values)}}}"
      for m, (param, values) in grids.items()
    )
    + f"; fSGLD uses σ = β^(−(1+η)/4), η = {ETA:g}.",
    "",
    f"Wall time {results['wall_time_s'] / 60:.1f} min ({results['environment']['backend']}).",
    "",
  ]
  return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
  """Final test accuracy and Hessian trace per method and setting, with error bars."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  settings = results["settings"]
  fig, axes = plt.subplots(4, len(settings), figsize=(4.2 * len(settings), 12.5), squeeze=False)
  for j, s in enumerate(settings):
    methods = list(s["summary"])
    x = np.arange(len(methods))
    colors = [f"C{i}" for i in range(len(methods))]
    for row, (metric, scale, ylabel) in enumerate(
      (
        ("final_test_acc", 100, "final clean test acc (%)"),
        ("hessian_trace", 1, "Hessian trace"),
        ("lambda_max", 1, "λmax"),
      )
    ):
      ax = axes[row, j]
      means = [scale * (s["summary"][m][metric]["mean"] or 0.0) for m in methods]
      stds = [scale * (s["summary"][m][metric]["std"] or 0.0) for m in methods]
      ax.bar(x, means, yerr=stds, capsize=4, color=colors)
      for i, m in enumerate(methods):
        values = [scale * (r[metric] or 0.0) for r in s["runs"][m]]
        ax.plot(np.full(len(values), x[i]), values, "k.", ms=4)
      ax.set_xticks(x, [LABELS[m] for m in methods])
      ax.set_ylabel(ylabel)
      if row == 0:
        ax.set_title(f"{s['dataset']}, {s['noise']}")
        low = min(min(scale * (r[metric] or 0.0) for r in s["runs"][m]) for m in methods)
        ax.set_ylim(max(0.0, low - 5), None)
      elif all((r[metric] or 0.0) > 0 for m in methods for r in s["runs"][m]):
        ax.set_yscale("log")
    ax = axes[3, j]
    for i, m in enumerate(methods):
      curve = 100 * np.asarray(s["summary"][m]["test_acc_curve_mean"])
      ax.plot(np.arange(1, len(curve) + 1), curve, color=colors[i], label=LABELS[m])
    ax.set_xlabel("epoch")
    ax.set_ylabel("clean test acc (%), mean over seeds")
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """``python -m benchmarks.noisy_labels [--quick] [--out DIR] [--no-progress]``."""
  results = _report.main(argv, sys.modules[__name__])
  if not all(
    math.isfinite(r["final_test_acc"]["mean"] or 0.0)
    for s in results["settings"]
    for r in s["summary"].values()
  ):
    print("warning: a run diverged")
  return results


if __name__ == "__main__":
  main()
