r"""Noisy labels with an AdamW recipe: AdamW, SAM-AdamW and RWP-AdamW against fSGLD and fSGHMC.

Random weight perturbation works in front of any optax optimizer:
``optax.chain(fsgld_optax.rwp(σ, key=...), optax.adamw(...))`` with the gradient from
:func:`fsgld_optax.perturbed_value_and_grad` is RWP-AdamW. This benchmark asks whether it
helps an AdamW recipe under label noise, and whether the filter-wise scale of m-RWP (Li et
al. 2024), σ‖w_f‖ per output filter (``perturbation_scale="filter"``), does better than one
isotropic σ on a network with BatchNorm, where rescaling a filter leaves the loss unchanged
and so one σ means something different in every layer.

Setting: MNIST-1D with 40% symmetric label noise on the training set (clean test labels),
the 1-D CNN of :mod:`benchmarks.models` with BatchNorm (channels 16-32-64), batch 128.

Methods (:data:`METHODS`):

* **AdamW**: ``optax.adamw`` (decoupled weight decay :data:`ADAMW_WEIGHT_DECAY`), a
  warm-up-cosine learning-rate schedule (linear warm-up over the first 5% of the steps, then
  cosine decay to 1% of the peak).
* **SAM-AdamW**: ``optax.contrib.sam`` (opaque mode) with AdamW as the outer optimizer and
  the normalised ascent step of radius ρ, two gradients per step.
* **RWP-AdamW**: ``optax.chain(fsgld_optax.rwp(σ), optax.adamw(...))`` with the gradient at
  θ + ε, ε ~ N(0, σ² I), one gradient per step.
* **RWP-AdamW (filter)**: the same with ``perturbation_scale="filter"``: ε_f ~ N(0, γ²‖w_f‖²
  I) for each output filter f of a kernel (1-D leaves: γ‖w‖); the grid is over γ.
* **fSGLD** and **fSGHMC** (momentum 0.9) with their own recipe, as in
  :mod:`benchmarks.noisy_labels`: the paper's step schedule (×0.1 at 1/3 and 2/3 of
  training), L2 weight decay 5e-4, β with the coupled σ = β^{-(1+η)/4}, η = 0.1; for fSGHMC
  λ is the effective step λ/(1 − m).

Protocol (``python -m benchmarks.adamw``; ``--quick`` for a smoke run; ``--check`` reruns
the first epochs of seed 0 of every selected cell against the committed results):

1. **Paired seeds** (:func:`benchmarks.noisy_labels.seed_keys`): a seed fixes the label
   noise, the train/validation split, the initialisation and the batch order for every
   method, and seeds the method's own noise.
2. **Grid**: every method trains at every cell of its grid (its learning rates
   :data:`LEARNING_RATES` × its own parameter :data:`GRIDS`) with every seed.
3. **Selection**: for each method the cell with the highest *mean over seeds* of the final
   accuracy on the validation split (15% of the training set) against its *noisy* labels;
   ties go to the first cell in grid order. The test split is never used for selection.
4. **Paired differences** (:data:`COMPARISONS`) of final clean test accuracy at the selected
   cells, seed by seed, with a 95% Student-t interval
   (:func:`benchmarks.noisy_labels.paired_difference`).
5. **Flatness** of the selected cells' final models: the Hessian trace (Hutchinson,
   Rademacher probes) of the training loss on a fixed subset of training examples, with
   BatchNorm in evaluation mode.

Writes ``adamw.json``, ``adamw.md`` and ``adamw.png`` to the output folder.

References:
  Li, Xie, Huang, Yang, *Revisiting Random Weight Perturbation for Efficiently Improving
  Generalization*, TMLR 2024. https://arxiv.org/abs/2404.00357

  Foret, Kleiner, Mobahi, Neyshabur, *Sharpness-Aware Minimization for Efficiently Improving
  Generalization*, ICLR 2021. https://arxiv.org/abs/2010.01412
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
from tqdm.auto import tqdm

import fsgld_optax
import fsgld_optax.flax
from benchmarks import _report, data, models
from benchmarks.noisy_labels import Setting, accuracy, load, paired_difference, seed_keys
from benchmarks.optimizers import Optimizer, make_optimizer
from benchmarks.train import init_state, make_loss

__all__ = [
  "COMPARISONS",
  "DEFAULT",
  "GRIDS",
  "LEARNING_RATES",
  "METHODS",
  "QUICK",
  "Config",
  "Method",
  "build_optimizer",
  "check",
  "main",
  "markdown",
  "run",
]


#: How a perturbation's scale depends on the weights (``perturbation_scale``).
Scale = Literal["isotropic", "filter", "element"]


@dataclasses.dataclass(frozen=True)
class Method:
  """A compared method.

  Attributes:
    label: its name in tables.
    param: the hyperparameter searched besides the learning rate (``None``: λ only).
    gradient: ``"plain"``, ``"sam"`` or ``"perturbed"``.
    scale: the ``perturbation_scale`` of the perturbed gradient.
  """

  label: str
  param: str | None
  gradient: str = "plain"
  scale: Scale = "isotropic"


METHODS: dict[str, Method] = {
  "adamw": Method("AdamW", None),
  "sam_adamw": Method("SAM-AdamW", "rho", "sam"),
  "rwp_adamw": Method("RWP-AdamW", "sigma", "perturbed"),
  "rwp_adamw_filter": Method("RWP-AdamW (filter)", "sigma", "perturbed", "filter"),
  "fsgld": Method("fSGLD", "beta", "perturbed"),
  "fsghmc": Method("fSGHMC", "beta", "perturbed"),
}
LABELS = {name: m.label for name, m in METHODS.items()}
#: Decoupled weight decay of the AdamW-based methods.
ADAMW_WEIGHT_DECAY = 0.05
#: L2 weight decay of fSGLD and fSGHMC (the paper's).
SGLD_WEIGHT_DECAY = 5e-4
ETA = 0.1
MOMENTUM = 0.9
ADAM_LRS = (1e-3, 3e-3)
SGD_LRS = (0.1, 0.2)
#: Learning rates of each method (the effective step λ/(1 − m) for fSGHMC).
LEARNING_RATES: dict[str, tuple[float, ...]] = {
  "adamw": ADAM_LRS,
  "sam_adamw": ADAM_LRS,
  "rwp_adamw": ADAM_LRS,
  "rwp_adamw_filter": ADAM_LRS,
  "fsgld": SGD_LRS,
  "fsghmc": SGD_LRS,
}
#: Values of each method's own parameter (for the filter scale σ is the relative γ).
GRIDS: dict[str, tuple[float, ...]] = {
  "adamw": (),
  "sam_adamw": (0.05, 0.2),
  "rwp_adamw": (0.01, 0.03),
  "rwp_adamw_filter": (0.01, 0.03),
  "fsgld": (1e5, 1e6),  # coupled σ ≈ 0.042, 0.022
  "fsghmc": (1e5, 1e6),
}
#: Paired differences reported: (method, baseline).
COMPARISONS = (
  ("rwp_adamw", "adamw"),
  ("rwp_adamw_filter", "adamw"),
  ("rwp_adamw_filter", "rwp_adamw"),
  ("sam_adamw", "adamw"),
  ("rwp_adamw", "sam_adamw"),
  ("rwp_adamw_filter", "sam_adamw"),
  ("fsgld", "adamw"),
  ("fsghmc", "adamw"),
  ("fsghmc", "rwp_adamw_filter"),
)
#: Epochs rerun by ``--check``.
CHECK_EPOCHS = 2
SELECTION_RULE = (
  "for each method, the cell (λ and its own parameter) with the highest mean over the seeds "
  "of the final accuracy on the validation split against its noisy labels; ties go to the "
  "first cell in grid order; the test split is not used"
)


@dataclasses.dataclass(frozen=True)
class Config:
  """Settings of the benchmark.

  Attributes:
    noise: the label noise of the MNIST-1D training set.
    epochs: training epochs.
    methods: keys of :data:`METHODS`.
    seeds: paired seeds.
    lrs: per method, learning rates overriding :data:`LEARNING_RATES`.
    grids: per method, parameter values overriding :data:`GRIDS`.
    val_fraction: fraction of the training set held out for validation.
    batch_size: examples per step.
    cnn_features: channels of the CNN.
    max_steps_per_epoch: cap on the steps per epoch (quick runs).
    flatness_examples: training examples of the Hessian-trace subset.
    hutchinson_samples: Rademacher probes of the trace estimate.
    confidence: level of the paired-difference intervals.
  """

  noise: str = "symmetric:0.4"
  epochs: int = 20
  methods: tuple[str, ...] = tuple(METHODS)
  seeds: tuple[int, ...] = (0, 1, 2)
  lrs: tuple[tuple[str, tuple[float, ...]], ...] | None = None
  grids: tuple[tuple[str, tuple[float, ...]], ...] | None = None
  val_fraction: float = 0.15
  batch_size: int = 128
  cnn_features: tuple[int, ...] = (16, 32, 64)
  max_steps_per_epoch: int | None = None
  flatness_examples: int = 256
  hutchinson_samples: int = 8
  confidence: float = 0.95

  def __post_init__(self) -> None:
    unknown = [m for m in self.methods if m not in METHODS]
    if unknown:
      raise ValueError(f"Unknown methods {unknown}; choose from {', '.join(METHODS)}.")
    if len(set(self.seeds)) != len(self.seeds) or not self.seeds:
      raise ValueError(f"seeds must be distinct and non-empty, got {self.seeds}.")
    if self.epochs < 1:
      raise ValueError(f"epochs must be >= 1, got {self.epochs}.")

  def cells(self, method: str) -> list[dict[str, float]]:
    """Every (λ, parameter) cell of ``method``, in grid order."""
    lrs = dict(self.lrs or ()).get(method, LEARNING_RATES[method])
    values = dict(self.grids or ()).get(method, GRIDS[method])
    param = METHODS[method].param
    if param is None or not values:
      return [{"lr": lr} for lr in lrs]
    return [{"lr": lr, param: v} for lr in lrs for v in values]


DEFAULT = Config()
QUICK = Config(
  epochs=2,
  seeds=(0, 1),
  lrs=tuple((m, LEARNING_RATES[m][:1]) for m in METHODS),
  grids=tuple((m, GRIDS[m][:1]) for m in METHODS),
  cnn_features=(8, 16),
  max_steps_per_epoch=3,
  flatness_examples=32,
  hutchinson_samples=2,
)


# --------------------------------------------------------------------------------------
# Optimizers and steps
# --------------------------------------------------------------------------------------


def adamw_schedule(learning_rate: float, total_steps: int) -> optax.Schedule:
  """Linear warm-up over the first 5% of the steps, then cosine decay to 1% of the peak.

  Examples:
    >>> schedule = adamw_schedule(1e-3, 100)
    >>> [round(float(schedule(k)), 6) for k in (0, 5, 100)]
    [0.0, 0.001, 1e-05]
  """
  warmup = max(total_steps // 20, 1)
  return optax.warmup_cosine_decay_schedule(
    0.0, learning_rate, warmup, max(total_steps, warmup + 1), end_value=0.01 * learning_rate
  )


def build_optimizer(
  method: str, hparams: dict[str, float], total_steps: int, key: int | jax.Array
) -> Optimizer:
  """The optimizer of ``method`` at one cell of its grid.

  Args:
    method: a key of :data:`METHODS`.
    hparams: ``lr`` and the method's own parameter (``rho``, ``sigma`` or ``beta``).
    total_steps: training steps (for the schedule).
    key: seed or typed key of the perturbations and Langevin noise.

  Returns:
    A :class:`benchmarks.optimizers.Optimizer`.

  Examples:
    >>> opt = build_optimizer("rwp_adamw", {"lr": 1e-3, "sigma": 0.01}, 100, key=0)
    >>> opt.gradient
    'perturbed'
  """
  spec = METHODS[method]
  lr = float(hparams["lr"])
  if method in ("fsgld", "fsghmc"):
    return make_optimizer(
      method,
      learning_rate=lr * (1.0 - MOMENTUM) if method == "fsghmc" else lr,
      total_steps=total_steps,
      key=key,
      weight_decay=SGLD_WEIGHT_DECAY,
      beta=float(hparams["beta"]),
      eta=ETA,
      momentum=MOMENTUM if method == "fsghmc" else None,
    )
  schedule = adamw_schedule(lr, total_steps)
  adamw = optax.adamw(schedule, weight_decay=ADAMW_WEIGHT_DECAY)
  if method == "adamw":
    tx: Any = adamw
  elif method == "sam_adamw":
    adversary = optax.chain(optax.contrib.normalize(), optax.sgd(float(hparams["rho"])))
    tx = optax.contrib.sam(adamw, adversary, opaque_mode=True)
  else:
    tx = optax.chain(fsgld_optax.rwp(float(hparams["sigma"]), key=key), adamw)
  return Optimizer(method, tx, spec.gradient, schedule)  # pyright: ignore[reportArgumentType]


def make_step(
  optimizer: Optimizer, loss_fn: Callable[..., Any], scale: Scale = "isotropic"
) -> Callable[..., tuple[fsgld_optax.flax.TrainState, jax.Array]]:
  """``step(state, x, y) -> (state, loss)`` with ``optimizer``'s kind of gradient.

  ``loss_fn(params, batch_stats, x, y) -> (loss, new batch_stats)``. Perturbed gradients
  use ``perturbation_scale=scale``; SAM's adversarial gradient uses this batch's statistics
  without updating the running averages a second time.
  """
  plain = jax.value_and_grad(loss_fn, has_aux=True)
  perturbed = fsgld_optax.perturbed_value_and_grad(
    loss_fn, has_aux=True, aux_reduction="mean", perturbation_scale=scale
  )
  tx = optax.with_extra_args_support(optimizer.tx)

  def step(state: fsgld_optax.flax.TrainState, x: jax.Array, y: jax.Array) -> Any:
    if optimizer.gradient == "perturbed":
      (loss, stats), grads = perturbed(state.params, state.opt_state, state.batch_stats, x, y)
      return state.apply_gradients(grads=grads, batch_stats=stats), loss
    (loss, stats), grads = plain(state.params, state.batch_stats, x, y)
    if optimizer.gradient == "plain":
      return state.apply_gradients(grads=grads, batch_stats=stats), loss

    def adversarial_grad(params: Any, _: Any) -> Any:
      return jax.grad(loss_fn, has_aux=True)(params, state.batch_stats, x, y)[0]

    updates, opt_state = tx.update(grads, state.opt_state, state.params, grad_fn=adversarial_grad)
    new_state = state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, updates),
      opt_state=opt_state,
      batch_stats=stats,
    )
    return new_state, loss

  return step


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


class Trainer:
  """Trains the CNN on the noisy MNIST-1D, one compiled step per (method, cell)."""

  def __init__(self, config: Config) -> None:
    self.config = config
    self.model: Any = models.CNN1D(10, features=config.cnn_features)
    self._datasets: dict[int, data.Dataset] = {}
    self._steps: dict[tuple[Any, ...], Callable[..., Any]] = {}

    def predict(params: Any, batch_stats: Any, x: jax.Array) -> jax.Array:
      variables = {"params": params, "batch_stats": batch_stats}
      return jnp.argmax(self.model.apply(variables, x, train=False), axis=-1)

    self.predict = jax.jit(predict)

    def trace(params: Any, batch_stats: Any, x: jax.Array, y: jax.Array, key: jax.Array) -> Any:
      def loss_fn(p: Any) -> jax.Array:
        variables = {"params": p, "batch_stats": batch_stats}
        logits = self.model.apply(variables, x, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

      est = fsgld_optax.diagnostics.hutchinson_trace(
        loss_fn, params, key, num_samples=config.hutchinson_samples
      )
      return est.trace

    self.trace = jax.jit(trace)

  def dataset(self, seed: int) -> data.Dataset:
    if seed not in self._datasets:
      setting = Setting("mnist1d", self.config.noise, self.config.epochs)
      self._datasets[seed] = load(setting, seed, self.config.val_fraction)
    return self._datasets[seed]

  def steps_per_epoch(self) -> int:
    steps = len(self.dataset(self.config.seeds[0]).x_train) // self.config.batch_size
    cap = self.config.max_steps_per_epoch
    return steps if cap is None else min(steps, cap)

  def fit(
    self,
    method: str,
    hparams: dict[str, float],
    seed: int,
    bar: Any = None,
    *,
    stop_after: int | None = None,
  ) -> dict[str, Any]:
    """One run: per-epoch test accuracy and loss, final validation/train accuracies, trace.

    With ``stop_after`` (``--check``) the run follows the same schedule but stops after that
    many epochs and returns only the per-epoch ``test_acc`` and ``train_loss_curve``.
    """
    start = time.perf_counter()
    config, ds, keys = self.config, self.dataset(seed), seed_keys(seed)
    steps_per_epoch = self.steps_per_epoch()
    total = config.epochs * steps_per_epoch
    cache_key = (method, tuple(sorted(hparams.items())))
    if cache_key not in self._steps:
      # One compiled step per cell, shared by the seeds: the key lives in the state.
      optimizer = build_optimizer(method, hparams, total, seed_keys(0)["optimizer"])
      loss_fn = make_loss(self.model.apply, True)
      self._steps[cache_key] = jax.jit(make_step(optimizer, loss_fn, METHODS[method].scale))
    step = self._steps[cache_key]
    optimizer = build_optimizer(method, hparams, total, keys["optimizer"])
    state = init_state(self.model, optimizer, ds.x_train, keys["init"])
    test_acc, losses = [], []
    for epoch in range(config.epochs if stop_after is None else stop_after):
      loss_sum = jnp.zeros(())
      batches = data.iterate_batches(
        keys["order"], ds.x_train, ds.y_train, config.batch_size, epoch=epoch
      )
      for _, (xb, yb) in zip(range(steps_per_epoch), batches, strict=False):
        state, loss = step(state, xb, yb)
        loss_sum = loss_sum + loss
      losses.append(float(loss_sum) / steps_per_epoch)
      test_acc.append(accuracy(self.predict, state, ds.x_test, ds.y_test))
      if bar is not None:
        bar.update(steps_per_epoch)
    if stop_after is not None:
      return {"seed": seed, "test_acc": test_acc, "train_loss_curve": losses}
    assert ds.x_val is not None and ds.y_val is not None
    m = config.flatness_examples
    trace = self.trace(
      state.params, state.batch_stats, ds.x_train[:m], ds.y_train[:m], keys["diagnostics"]
    )
    return {
      "seed": seed,
      "test_acc": test_acc,
      "train_loss_curve": losses,
      "final_test_acc": test_acc[-1],
      "val_acc": accuracy(self.predict, state, ds.x_val, ds.y_val),
      "noisy_train_acc": accuracy(self.predict, state, ds.x_train, ds.y_train),
      "hessian_trace": float(trace),
      "seconds": time.perf_counter() - start,
    }


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------

_METRICS = ("val_acc", "final_test_acc", "noisy_train_acc", "hessian_trace")


def _mean_std(values: Sequence[float]) -> dict[str, float]:
  array = np.asarray(values, np.float64)
  return {
    "mean": float(array.mean()),
    "std": float(array.std(ddof=1)) if array.size > 1 else 0.0,
  }


def describe(method: str, hparams: dict[str, float]) -> str:
  """A short text for a cell, e.g. ``λ=0.001, σ=0.01``."""
  parts = [f"λ={hparams['lr']:g}"]
  if "rho" in hparams:
    parts.append(f"ρ={hparams['rho']:g}")
  if "sigma" in hparams:
    parts.append(("γ" if METHODS[method].scale == "filter" else "σ") + f"={hparams['sigma']:g}")
  if "beta" in hparams:
    sigma = float(fsgld_optax.coupled_sigma(hparams["beta"], ETA))
    parts.append(f"β={hparams['beta']:.0e}, σ={sigma:.3f}")
  return ", ".join(parts)


def run(config: Config, *, progress: bool = True) -> dict[str, Any]:
  """Trains the whole grid, selects, compares; returns JSON-ready results."""
  start = time.perf_counter()
  trainer = Trainer(config)
  runs = sum(len(config.cells(m)) for m in config.methods) * len(config.seeds)
  bar = tqdm(
    total=runs * config.epochs * trainer.steps_per_epoch(),
    desc="adamw",
    unit="step",
    disable=not progress,
  )
  cells: dict[str, list[dict[str, Any]]] = {}
  try:
    for method in config.methods:
      cells[method] = []
      for hparams in config.cells(method):
        bar.set_postfix_str(f"{LABELS[method]} {describe(method, hparams)}")
        results = [trainer.fit(method, hparams, seed, bar) for seed in config.seeds]
        stats = {k: _mean_std([r[k] for r in results]) for k in _METRICS}
        cells[method].append({"hparams": hparams, "runs": results, "stats": stats})
        bar.write(
          f"{LABELS[method]} {describe(method, hparams)}: validation "
          f"{stats['val_acc']['mean']:.3f}, test {stats['final_test_acc']['mean']:.3f}"
        )
  finally:
    bar.close()
  selected = {
    m: int(np.argmax([c["stats"]["val_acc"]["mean"] for c in cells[m]])) for m in config.methods
  }
  comparisons, first_seed = [], config.seeds[0]
  if len(config.seeds) > 1:
    for a, b in COMPARISONS:
      if a in cells and b in cells:
        ra = cells[a][selected[a]]["runs"]
        rb = cells[b][selected[b]]["runs"]
        d = paired_difference(
          [r["final_test_acc"] for r in ra], [r["final_test_acc"] for r in rb], config.confidence
        )
        wins = sum(x["final_test_acc"] > y["final_test_acc"] for x, y in zip(ra, rb, strict=True))
        comparisons.append({"method": a, "baseline": b, "wins": wins, **d})
  ds = trainer.dataset(first_seed)
  return {
    "benchmark": "adamw",
    "config": dataclasses.asdict(config),
    "selection_rule": SELECTION_RULE,
    "num_train": len(ds.x_train),
    "num_val": 0 if ds.x_val is None else len(ds.x_val),
    "num_test": len(ds.x_test),
    "steps_per_epoch": trainer.steps_per_epoch(),
    "realised_noise_rate": [trainer.dataset(s).noise_rate for s in config.seeds],
    "cells": cells,
    "selected": selected,
    "comparisons": comparisons,
    "environment": _report.environment(),
    "wall_time_s": time.perf_counter() - start,
  }


def config_from_json(values: dict[str, Any]) -> Config:
  """The :class:`Config` recorded in a results file (``dataclasses.asdict`` of one)."""
  kwargs = dict(values)
  for key in ("lrs", "grids"):
    if kwargs.get(key) is not None:
      kwargs[key] = tuple((m, tuple(v)) for m, v in kwargs[key])
  return _report.config_from_json(Config, kwargs)


def check(
  recorded: dict[str, Any], *, quick: bool = False, progress: bool = True
) -> list[_report.Check]:
  """Reruns the first epochs of seed ``seeds[0]`` of every method's selected cell.

  The same schedule as the recorded run, so the same trajectory: the mean training loss and
  the clean test accuracy after each of the first :data:`CHECK_EPOCHS` epochs (``quick``:
  AdamW, RWP-AdamW and fSGLD, one epoch) are compared with the recorded ones.
  """
  config = config_from_json(recorded["config"])
  trainer, seed = Trainer(config), config.seeds[0]
  methods = [m for m in config.methods if not quick or m in ("adamw", "rwp_adamw", "fsgld")]
  epochs = 1 if quick else min(CHECK_EPOCHS, config.epochs)
  span = "epoch 1" if epochs == 1 else f"epochs 1–{epochs}"
  checks = []
  for method in tqdm(methods, desc="check", disable=not progress):
    cell = recorded["cells"][method][recorded["selected"][method]]
    run_record = next(r for r in cell["runs"] if r["seed"] == seed)
    result = trainer.fit(method, cell["hparams"], seed, stop_after=epochs)
    name = f"{LABELS[method]} ({describe(method, cell['hparams'])}), seed {seed}"
    checks += [
      _report.Check(
        f"{name}: train loss, {span}",
        run_record["train_loss_curve"][:epochs],
        result["train_loss_curve"],
        rtol=_report.TRAINING_LOSS_RTOL,
      ),
      _report.Check(
        f"{name}: test accuracy, {span}",
        run_record["test_acc"][:epochs],
        result["test_acc"],
        atol=_report.TRAINING_ACC_ATOL,
      ),
    ]
  return checks


def _pm(stat: dict[str, float], scale: float = 100.0, digits: int = 1) -> str:
  return f"{scale * stat['mean']:.{digits}f} ± {scale * stat['std']:.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
  """The Markdown report of :func:`run`'s results."""
  c = results["config"]
  level = f"{100 * c['confidence']:g}%"
  seeds = ", ".join(str(s) for s in c["seeds"])
  rates = results["realised_noise_rate"]
  lines = [
    "## Noisy labels with an AdamW recipe",
    "",
    f"MNIST-1D, {c['noise']} label noise (realised {min(rates):.3f}–{max(rates):.3f}), "
    f"{results['num_train']} training / {results['num_val']} validation / "
    f"{results['num_test']} clean test examples; 1-D CNN with BatchNorm, channels "
    f"{'-'.join(map(str, c['cnn_features']))}; {c['epochs']} epochs × "
    f"{results['steps_per_epoch']} steps of batch {c['batch_size']}; paired seeds {seeds}. "
    f"AdamW-based methods: decoupled weight decay {ADAMW_WEIGHT_DECAY}, warm-up-cosine "
    f"schedule; fSGLD/fSGHMC: the paper's step schedule, L2 {SGLD_WEIGHT_DECAY}, coupled σ "
    f"(η = {ETA}), fSGHMC momentum {MOMENTUM} with the effective step λ/(1 − m). "
    "RWP-AdamW (filter) perturbs each output filter with γ‖w_f‖. Selection rule: "
    + results["selection_rule"]
    + ". Accuracies in %, mean ± std over the seeds; Hessian trace of the training loss "
    f"(Hutchinson, {c['hutchinson_samples']} probes, {c['flatness_examples']} examples, "
    "BatchNorm in evaluation mode).",
    "",
    "| method | selected | val acc (noisy) | final clean test acc | noisy-train acc "
    "| Hessian trace |",
    "|---|---|---|---|---|---|",
  ]
  for m, cells in results["cells"].items():
    cell = cells[results["selected"][m]]
    st = cell["stats"]
    lines.append(
      f"| {LABELS[m]} | {describe(m, cell['hparams'])} | {_pm(st['val_acc'])} | "
      f"{_pm(st['final_test_acc'])} | {_pm(st['noisy_train_acc'])} | "
      f"{_pm(st['hessian_trace'], 1.0, 1)} |"
    )
  if results["comparisons"]:
    lines += [
      "",
      f"Paired differences of final clean test accuracy at the selected cells (points, mean "
      f"[{level} Student-t interval]; wins = seeds on which the first method is ahead):",
      "",
      "| difference | mean [interval] | wins | resolved |",
      "|---|---|---|---|",
    ]
    for d in results["comparisons"]:
      sign = {1: "above 0", -1: "below 0", 0: "no"}[d["sign"]]
      lines.append(
        f"| {LABELS[d['method']]} − {LABELS[d['baseline']]} | {100 * d['mean']:+.1f} "
        f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] | {d['wins']}/{d['n']} | {sign} |"
      )
  lines += [
    "",
    "The whole grid: mean validation accuracy (noisy labels) / mean final clean test "
    "accuracy (%), selected cell in bold.",
    "",
    "| method | cell | val / test |",
    "|---|---|---|",
  ]
  for m, cells in results["cells"].items():
    for i, cell in enumerate(cells):
      st = cell["stats"]
      text = f"{100 * st['val_acc']['mean']:.1f} / {100 * st['final_test_acc']['mean']:.1f}"
      if i == results["selected"][m]:
        text = f"**{text}**"
      lines.append(f"| {LABELS[m]} | {describe(m, cell['hparams'])} | {text} |")
  lines += [
    "",
    f"Wall time {results['wall_time_s'] / 60:.1f} min ({results['environment']['backend']}).",
    "",
  ]
  return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
  """Final clean test accuracy of the selected cells, one dot per seed."""
  from matplotlib.figure import Figure

  methods = list(results["cells"])
  fig = Figure(figsize=(1.3 * len(methods) + 2, 3.6))
  ax = fig.subplots()
  for i, m in enumerate(methods):
    cell = results["cells"][m][results["selected"][m]]
    values = [100 * r["final_test_acc"] for r in cell["runs"]]
    ax.bar(i, float(np.mean(values)), color=f"C{i}", alpha=0.6)
    ax.plot(np.full(len(values), i), values, "k.", ms=4)
  ax.set_xticks(range(len(methods)), [LABELS[m] for m in methods], rotation=30, fontsize=8)
  low = min(100 * r["final_test_acc"] for c in results["cells"].values() for r in c[0]["runs"])
  ax.set_ylim(max(0.0, math.floor(low) - 10), None)
  ax.set_ylabel("final clean test acc (%)")
  ax.set_title(f"MNIST-1D, {results['config']['noise']} noise (selected cells)", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """``python -m benchmarks.adamw [--quick] [--check] [--out DIR] [--no-progress]``."""
  return _report.main(argv, sys.modules[__name__])


if __name__ == "__main__":
  main()
