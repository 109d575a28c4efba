r"""Sensitivity of fSGLD to the perturbation scale σ and to the number of perturbations n.

The paper's Figures 2 and 3 at a CPU scale: MNIST-1D with symmetric 40% label noise, the
16-32-64 1-D CNN and training protocol of :mod:`benchmarks.noisy_labels` (paper's schedule,
weight decay 5e-4, batch 128, no momentum), clean test accuracy mean ± std over seeds.

* **σ sweep** (Fig. 2): fSGLD at a fixed β with σ set explicitly (not coupled), from σ = 0
  (which is SGLD at that β) upwards; the coupled value σ = β^{-(1+η)/4}, η = 0.1, is marked.
  Also the Hessian trace of the final models (Hutchinson, as in the noisy-label benchmark),
  to show how the flatness of the solution follows σ. SGD is the reference line. At every
  σ > 0 the same run without Langevin noise (β = ∞: random weight perturbation, RWP) isolates
  what the Langevin term adds to the smoothing.
* **n sweep** (Fig. 3): n perturbations per step, averaged,

  .. math::

    \bar g = \frac{1}{n} \sum_{i=1}^{n} \nabla U(\theta + \varepsilon_i; b_i),

  either *plain* (every :math:`b_i` is the whole batch: n forward/backward passes per step)
  or *split_batch* (:math:`b_i` is the i-th 1/n slice of the batch: one pass per step, the
  cost of SGD). n = 1 is the same run for both.

The learning rate and β are the values the noisy-label search selected for this setting
(see ``noisy_labels.md``). ``python -m benchmarks.sweeps`` (``--quick`` for a smoke run)
writes ``sweeps.json``, ``sweeps.md`` and ``sweeps.png`` to the output folder. ``--check``
retrains the first two epochs (``--quick``: one) of the first seed's SGD, fSGLD and RWP runs
at ``n_sigma`` and compares them with a results file as the noisy-label check does (bitwise
on its machine, else within the noisy-label tolerances).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

import fsgld_optax
from benchmarks import _report
from benchmarks.noisy_labels import CHECK_ACC_ATOL, CHECK_LOSS_RTOL, Setting, Trainer, _fmt
from benchmarks.noisy_labels import Config as NoisyConfig

__all__ = ["Config", "check", "main", "run"]


@dataclasses.dataclass(frozen=True)
class Config:
  """Settings of the sweeps.

  Attributes:
    dataset: dataset of the sweeps.
    noise: its label noise.
    epochs: epochs per run.
    seeds: seeds (each changes the label noise, the split, the initialisation, the batch order
      and the optimizer noise).
    lr: initial learning rate (all runs).
    beta: inverse temperature β of fSGLD.
    eta: coupling exponent η, for the marked coupled σ.
    sigmas: σ values of the σ sweep.
    n_sigma: σ of the n sweep (one of ``sigmas``, so that n = 1 reuses that run).
    n_values: numbers of perturbations of the n sweep.
    flatness: Hessian trace of the σ-sweep models.
    rwp: also run RWP (fSGLD with β = ∞) at every σ > 0 of the σ sweep.
    cnn_features: channels of the 1-D CNN.
    max_steps_per_epoch: cap on steps per epoch (quick runs).
    val_fraction: held-out fraction, as in the noisy-label benchmark (same training split).
    flatness_examples: training subset of the Hessian trace.
    hutchinson_samples: Rademacher probes.
  """

  dataset: str = "mnist1d"
  noise: str = "symmetric:0.4"
  epochs: int = 40
  seeds: tuple[int, ...] = (0, 1)
  lr: float = 0.2
  beta: float = 1e5
  eta: float = 0.1
  sigmas: tuple[float, ...] = (0.0, 0.01, 0.02, 0.04, 0.08, 0.16)
  n_sigma: float = 0.04
  n_values: tuple[int, ...] = (1, 2, 4)
  flatness: bool = True
  rwp: bool = True
  cnn_features: tuple[int, ...] = (16, 32, 64)
  max_steps_per_epoch: int | None = None
  val_fraction: float = 0.15
  flatness_examples: int = 256
  hutchinson_samples: int = 8

  def __post_init__(self) -> None:
    if self.n_sigma not in self.sigmas:
      raise ValueError(f"n_sigma={self.n_sigma} must be one of sigmas={self.sigmas}.")
    if 1 not in self.n_values:
      raise ValueError("n_values must contain 1.")


DEFAULT = Config()
QUICK = Config(
  epochs=2,
  seeds=(0, 1),
  sigmas=(0.0, 0.04),
  n_values=(1, 2),
  flatness=False,
  cnn_features=(8, 16),
  max_steps_per_epoch=4,
)


def _mean_std(values: Sequence[float | None]) -> dict[str, float | None]:
  array = np.asarray([v for v in values if v is not None], np.float64)
  if array.size == 0:
    return {"mean": None, "std": None}
  return {
    "mean": float(array.mean()),
    "std": float(array.std(ddof=1)) if array.size > 1 else 0.0,
  }


def _trainer(config: Config) -> Trainer:
  return Trainer(
    NoisyConfig(
      cnn_features=config.cnn_features,
      max_steps_per_epoch=config.max_steps_per_epoch,
      val_fraction=config.val_fraction,
      flatness_examples=config.flatness_examples,
      hutchinson_samples=config.hutchinson_samples,
    )
  )


def run(config: Config, *, progress: bool = True) -> dict[str, Any]:
  """Runs both sweeps; returns JSON-ready results."""
  start = time.perf_counter()
  trainer = _trainer(config)
  setting = Setting(config.dataset, config.noise, config.epochs)
  steps_per_epoch = trainer.steps_per_epoch(trainer.dataset(setting, config.seeds[0]))

  # (name, method, hparams, flatness, gradient passes per step)
  jobs: list[tuple[str, str, dict[str, Any], bool, int]] = [
    ("sgd", "sgd", {"lr": config.lr}, config.flatness, 1)
  ]
  for sigma in config.sigmas:
    hparams = {"lr": config.lr, "beta": config.beta, "sigma": sigma}
    jobs.append((f"sigma:{sigma:g}", "fsgld", hparams, config.flatness, 1))
    if config.rwp and sigma > 0:
      hparams = {"lr": config.lr, "sigma": sigma}
      jobs.append((f"rwp:{sigma:g}", "rwp", hparams, config.flatness, 1))
  for n in config.n_values:
    if n == 1:
      continue
    for split in (False, True):
      hparams = {
        "lr": config.lr,
        "beta": config.beta,
        "sigma": config.n_sigma,
        "n_perturbations": n,
        "split_batch": split,
      }
      jobs.append(
        (f"n:{n}:{'split' if split else 'plain'}", "fsgld", hparams, False, 1 if split else n)
      )

  total = sum(cost for *_, cost in jobs) * len(config.seeds) * config.epochs * steps_per_epoch
  bar = tqdm(total=total, desc="sweeps", unit="step", disable=not progress)
  runs: dict[str, list[dict[str, Any]]] = {}
  try:
    for name, method, hparams, flatness, cost in jobs:
      runs[name] = []
      for seed in config.seeds:
        bar.set_postfix_str(f"{name} seed {seed}")
        result = trainer.train(setting, method, hparams, seed, flatness=flatness)
        runs[name].append({"seed": seed} | result.summary())
        bar.update(cost * config.epochs * steps_per_epoch)
  finally:
    bar.close()

  def stats(name: str) -> dict[str, Any]:
    rs = runs[name]
    return {
      metric: _mean_std([r[metric] for r in rs])
      for metric in ("final_test_acc", "best_test_acc", "noisy_train_acc", "hessian_trace")
    }

  sigma_rows = [
    {"sigma": s}
    | stats(f"sigma:{s:g}")
    | {"rwp": stats(f"rwp:{s:g}") if f"rwp:{s:g}" in runs else None}
    for s in config.sigmas
  ]
  n_rows = []
  for n in config.n_values:
    for split in (False, True):
      name = f"sigma:{config.n_sigma:g}" if n == 1 else f"n:{n}:{'split' if split else 'plain'}"
      if n == 1 and split:
        continue
      n_rows.append(
        {
          "n": n,
          "mode": "both" if n == 1 else "split_batch" if split else "plain",
          "gradient_passes_per_step": 1 if (split or n == 1) else n,
        }
        | stats(name)
      )
  return {
    "benchmark": "sweeps",
    "config": dataclasses.asdict(config),
    "coupled_sigma": float(fsgld_optax.coupled_sigma(config.beta, config.eta)),
    "steps_per_epoch": steps_per_epoch,
    "sgd": stats("sgd"),
    "sigma_sweep": sigma_rows,
    "n_sweep": n_rows,
    "runs": runs,
    "environment": _report.environment(),
    "wall_time_s": time.perf_counter() - start,
  }


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def _pm(stat: dict[str, float | None], scale: float = 100.0, digits: int = 1) -> str:
  if stat["mean"] is None:
    return "–"
  return f"{scale * stat['mean']:.{digits}f} ± {scale * (stat['std'] or 0.0):.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
  """The Markdown report of :func:`run`'s results."""
  c = results["config"]
  sgd = results["sgd"]
  lines = [
    "## Sensitivity to σ and to the number of perturbations n",
    "",
    f"{c['dataset']} with {c['noise']} label noise, {c['epochs']} epochs × "
    f"{results['steps_per_epoch']} steps, λ = {c['lr']:g}, β = {_fmt(c['beta'])}; clean test "
    f"accuracy (%) mean ± std over seeds {', '.join(str(s) for s in c['seeds'])}. "
    f"SGD (λ = {c['lr']:g}): final {_pm(sgd['final_test_acc'])}, best "
    f"{_pm(sgd['best_test_acc'])}, Hessian trace {_pm(sgd['hessian_trace'], 1)}.",
    "",
    f"σ sweep (fSGLD, σ set explicitly; σ = 0 is SGLD; the coupled σ at this β would be "
    f"{results['coupled_sigma']:.3f}; RWP is the same run with β = ∞, no Langevin noise):",
    "",
    "| σ | final test acc | best test acc | noisy-train acc | Hessian trace "
    "| RWP final test acc | RWP noisy-train acc | RWP Hessian trace |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for r in results["sigma_sweep"]:
    rwp = r["rwp"]
    lines.append(
      f"| {r['sigma']:g} | {_pm(r['final_test_acc'])} | {_pm(r['best_test_acc'])} | "
      f"{_pm(r['noisy_train_acc'])} | {_pm(r['hessian_trace'], 1)} | "
      + (
        "– | – | – |"
        if rwp is None
        else f"{_pm(rwp['final_test_acc'])} | {_pm(rwp['noisy_train_acc'])} | "
        f"{_pm(rwp['hessian_trace'], 1)} |"
      )
    )
  lines += [
    "",
    f"n sweep (fSGLD, σ = {c['n_sigma']:g}): plain = every perturbation on the whole batch, "
    "split_batch = each on a 1/n slice:",
    "",
    "| n | mode | gradient passes / step | final test acc | best test acc | noisy-train acc |",
    "|---|---|---|---|---|---|",
  ]
  for r in results["n_sweep"]:
    lines.append(
      f"| {r['n']} | {r['mode']} | {r['gradient_passes_per_step']} | "
      f"{_pm(r['final_test_acc'])} | {_pm(r['best_test_acc'])} | {_pm(r['noisy_train_acc'])} |"
    )
  lines += [
    "",
    f"Wall time {results['wall_time_s'] / 60:.1f} min ({results['environment']['backend']}).",
    "",
  ]
  return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
  """Accuracy and Hessian trace against σ, accuracy against n; error bars are ± std."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  c = results["config"]
  sgd = results["sgd"]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))

  def band(ax: Any, stat: dict[str, float | None], scale: float, label: str) -> None:
    if stat["mean"] is None:
      return
    mean, std = scale * stat["mean"], scale * (stat["std"] or 0.0)
    ax.axhline(mean, color="grey", ls="--", lw=1, label=label)
    ax.axhspan(mean - std, mean + std, color="grey", alpha=0.15)

  rows = results["sigma_sweep"]
  sig = np.asarray([r["sigma"] for r in rows])
  # σ = 0 is drawn at a small positive x on the log axis.
  positive = sig[sig > 0]
  x = np.where(sig > 0, sig, (positive.min() / 3) if positive.size else 1e-3)
  for ax, metric, scale, ylabel in (
    (axes[0], "final_test_acc", 100.0, "final clean test acc (%)"),
    (axes[1], "hessian_trace", 1.0, "Hessian trace"),
  ):
    means = [r[metric]["mean"] for r in rows]
    if any(m is None for m in means):
      ax.set_visible(False)
      continue
    ax.errorbar(
      x,
      scale * np.asarray(means, np.float64),
      yerr=[scale * (r[metric]["std"] or 0.0) for r in rows],
      fmt="o-",
      capsize=4,
      label="fSGLD",
    )
    rwp = [(xi, r["rwp"]) for xi, r in zip(x, rows, strict=True) if r["rwp"] is not None]
    if rwp and all(r[metric]["mean"] is not None for _, r in rwp):
      ax.errorbar(
        [xi for xi, _ in rwp],
        [scale * r[metric]["mean"] for _, r in rwp],
        yerr=[scale * (r[metric]["std"] or 0.0) for _, r in rwp],
        fmt="s--",
        capsize=4,
        label="RWP (β = ∞)",
      )
    band(ax, sgd[metric], scale, "SGD (± std)")
    ax.axvline(results["coupled_sigma"], color="C3", ls=":", label="coupled σ(β)")
    ax.set_xscale("log")
    ax.set_xticks(x, ["0 (SGLD)" if s == 0 else f"{s:g}" for s in sig])
    ax.minorticks_off()
    ax.set_xlabel("σ")
    ax.set_ylabel(ylabel)
    ax.set_title(f"σ sweep, β = {_fmt(c['beta'])}")
    ax.legend(fontsize=8)
  ax = axes[2]
  for mode, marker in (("plain", "o-"), ("split_batch", "s--")):
    rows = [r for r in results["n_sweep"] if r["mode"] in (mode, "both")]
    ax.errorbar(
      [r["n"] for r in rows],
      [100 * (r["final_test_acc"]["mean"] or 0.0) for r in rows],
      yerr=[100 * (r["final_test_acc"]["std"] or 0.0) for r in rows],
      fmt=marker,
      capsize=4,
      label=f"{mode} ({'n passes' if mode == 'plain' else '1 pass'} / step)",
    )
  band(ax, sgd["final_test_acc"], 100.0, "SGD (± std)")
  ax.set_xscale("log", base=2)
  ax.set_xticks(c["n_values"], [str(n) for n in c["n_values"]])
  ax.minorticks_off()
  ax.set_xlabel("perturbations n")
  ax.set_ylabel("final clean test acc (%)")
  ax.set_title(f"n sweep, σ = {c['n_sigma']:g}")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def check(
  recorded: dict[str, Any], *, quick: bool = False, progress: bool = True
) -> list[_report.Check]:
  """Retrains the first epochs of the first seed's SGD, fSGLD and RWP runs at ``n_sigma``."""
  del progress
  config = _report.config_from_json(Config, recorded["config"])
  trainer = _trainer(config)
  setting = Setting(config.dataset, config.noise, config.epochs)
  seed, epochs = config.seeds[0], 1 if quick else 2
  sigma = config.n_sigma
  jobs = [
    ("sgd", "sgd", {"lr": config.lr}),
    (f"sigma:{sigma:g}", "fsgld", {"lr": config.lr, "beta": config.beta, "sigma": sigma}),
    (f"rwp:{sigma:g}", "rwp", {"lr": config.lr, "sigma": sigma}),
  ]
  checks = []
  for name, method, hparams in jobs:
    if name not in recorded["runs"]:
      continue
    run_record = next(r for r in recorded["runs"][name] if r["seed"] == seed)
    result, _ = trainer.fit(setting, method, hparams, seed, stop_after=epochs)
    label = f"{name}, seed {seed}, epochs 1–{epochs}"
    checks.append(
      _report.Check(
        f"{label}: test accuracy",
        run_record["test_acc"][:epochs],
        result.test_acc,
        atol=CHECK_ACC_ATOL,
      )
    )
    if "train_loss_curve" in run_record:
      checks.append(
        _report.Check(
          f"{label}: train loss",
          run_record["train_loss_curve"][:epochs],
          result.train_loss_curve,
          rtol=CHECK_LOSS_RTOL,
        )
      )
  return checks


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """``python -m benchmarks.sweeps [--quick] [--check] [--out DIR] [--no-progress]``."""
  return _report.main(argv, sys.modules[__name__])


if __name__ == "__main__":
  main()
