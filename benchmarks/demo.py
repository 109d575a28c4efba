"""Main demo: SGD, SAM and fSGLD on MNIST-1D with 40% symmetric label noise.

Run::

    python -m benchmarks.demo            # the full run, a few minutes on 2 CPU cores
    python -m benchmarks.demo --quick    # a few steps, to check the installation
    python -m benchmarks.demo --tune     # the validation-split check behind the settings
    python -m benchmarks.demo --check    # rerun the first epochs, compare with demo.json

A 1-D CNN (:class:`benchmarks.models.CNN1D`, 64,618 parameters, BatchNorm) is trained on the
4,000 MNIST-1D training signals, 40% of whose labels were replaced by a uniformly drawn
other class, and tested on the 1,000 clean test signals. All three optimizers share the
initialisation, the batch order (batch 128), weight decay 5e-4, no momentum, and the paper's
schedule (learning rate ×0.1 after 1/3 and 2/3 of the epochs), as in the paper's noisy-label
experiments. The demo prints a table (clean test accuracy, best over epochs and final;
accuracy on the noisy training labels, i.e. how much noise was memorised; time per step
relative to SGD), and writes ``demo.png`` (test accuracy per epoch), ``demo.json`` and
``demo.md`` to ``benchmarks/results/demo/``.

Settings, and how they were chosen. ``--tune`` trains on 80% of the training set and scores
the final accuracy on the other 20% against its noisy labels (the test set is never used;
with symmetric noise the noisy-label accuracy is an increasing affine function of the clean
one, so both rank settings alike). On that split it compares learning rates
{0.05, 0.1, 0.2} for SGD and then, at SGD's best learning rate, ρ ∈ {0.02, 0.05, 0.1, 0.2,
0.5} for SAM and β ∈ {1e4, 1e5, 1e6, 1e7} for fSGLD with the coupled σ = β^{-(1+η)/4},
η = 0.1 (σ ≈ 0.079, 0.042, 0.022, 0.012). The winners, used by default (``SETTINGS``):
learning rate 0.2 for all three, ρ = 0.2 for SAM, β = 1e5 (σ ≈ 0.042) for fSGLD; the
validation accuracies of every setting tried are in ``benchmarks/results/demo/tune.md``.

Timing: the time per step is measured after training, in this process, on one fixed batch
with compiled steps, interleaving repeats of the methods and taking the median of each; the
table reports it relative to SGD. SAM makes two forward and backward passes per step. fSGLD
with one perturbation makes one, like SGD, plus the draws of ε and ξ (one number per weight
each); what those cost depends on the backend and on the distribution, so the demo also
times fSGLD with the cheap draws (``perturbation="rademacher"``,
``langevin_noise="binomial"``: one random bit per weight for ε, one byte for ξ), without
training it. ``demo.md`` holds the numbers of the committed run.

The results files carry their provenance (:mod:`benchmarks._report`). ``--check`` retrains
the first two epochs of every method (``--quick``: one epoch of SGD and fSGLD) and compares
the training loss, the clean test accuracy and the noisy-train accuracy with ``demo.json``
(bitwise on its machine, else within the tolerances of :mod:`benchmarks._report`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from benchmarks import _report, data
from benchmarks.train import TrainConfig, build, train

__all__ = ["SETTINGS", "check", "main", "run_demo", "time_steps", "tune"]

RESULTS = Path(__file__).resolve().parent / "results" / "demo"
NOISE = "symmetric:0.4"
EPOCHS = 60
LEARNING_RATE = 0.2

#: The compared methods: optimizer name and the settings that differ from :data:`BASE`.
SETTINGS: dict[str, dict[str, Any]] = {
  "SGD": {"optimizer": "sgd"},
  "SAM": {"optimizer": "sam", "rho": 0.2},
  "fSGLD": {"optimizer": "fsgld", "beta": 1e5},
}

#: Timed, not trained: fSGLD with ``perturbation="rademacher"``, ``langevin_noise="binomial"``.
CHEAP = "fSGLD (Rademacher ε, binomial ξ)"

BASE = TrainConfig(
  dataset="mnist1d",
  noise=NOISE,
  epochs=EPOCHS,
  batch_size=128,
  lr=LEARNING_RATE,
  weight_decay=5e-4,
  seed=0,
)


def _describe(settings: dict[str, Any]) -> str:
  config = dataclasses.replace(BASE, **settings)
  if config.optimizer == "sam":
    return f"ρ={config.rho:g}"
  if config.optimizer == "fsgld":
    sigma = config.sigma
    if sigma is None:
      sigma = config.beta ** (-(1 + config.eta) / 4)
      return f"β={config.beta:g}, σ={sigma:.3g} (coupled, η={config.eta:g})"
    return f"β={config.beta:g}, σ={sigma:g}"
  return "-"


def time_steps(
  configs: dict[str, TrainConfig],
  dataset: data.Dataset,
  *,
  repeats: int = 7,
  steps: int = 20,
) -> dict[str, float]:
  """Median seconds per compiled train step of each config, repeats interleaved.

  Args:
    configs: name -> run configuration.
    dataset: the data (one fixed batch of it is used).
    repeats: timed repeats per config; the configs alternate within each repeat.
    steps: steps per repeat (timed together, then divided).

  Returns:
    name -> median seconds per step.
  """
  batch = dataset.x_train[: BASE.batch_size]
  labels = dataset.y_train[: BASE.batch_size]
  runs = {}
  for name, config in configs.items():
    step, state = build(config, dataset)
    state, _ = jax.block_until_ready(step(state, batch, labels))  # Compile and warm up.
    runs[name] = [step, state]
  times: dict[str, list[float]] = {name: [] for name in configs}
  for _ in range(repeats):
    for name, run in runs.items():
      step, state = run
      start = time.perf_counter()
      for _ in range(steps):
        state, loss = step(state, batch, labels)
      jax.block_until_ready((state, loss))
      times[name].append((time.perf_counter() - start) / steps)
      run[1] = state
  return {name: statistics.median(t) for name, t in times.items()}


def run_demo(
  *,
  epochs: int = EPOCHS,
  max_steps_per_epoch: int | None = None,
  out: Path = RESULTS,
  repeats: int = 7,
  timing_steps: int = 20,
  progress: bool = True,
  command: str = "python -m benchmarks.demo",
) -> dict[str, Any]:
  """Trains the three methods, times their steps, and writes the table, JSON and plot.

  Args:
    epochs: epochs per method.
    max_steps_per_epoch: cap on the steps per epoch (for quick runs).
    out: directory for ``demo.png``, ``demo.json`` and ``demo.md``.
    repeats: interleaved timing repeats.
    timing_steps: steps per timing repeat.
    progress: show progress bars.
    command: the command line recorded in the provenance.

  Returns:
    The results written to ``demo.json``.
  """
  dataset = data.load_mnist1d(noise=NOISE, seed=BASE.seed)
  configs = {
    name: dataclasses.replace(
      BASE,
      epochs=epochs,
      max_steps_per_epoch=max_steps_per_epoch,
      progress=progress,
      **settings,
    )
    for name, settings in SETTINGS.items()
  }
  start = time.perf_counter()
  histories = {name: train(config, dataset=dataset) for name, config in configs.items()}
  # Timed only: fSGLD with the cheap draws (one random bit per weight for ε, a byte for ξ).
  cheap = dataclasses.replace(
    configs["fSGLD"], perturbation="rademacher", langevin_noise="binomial"
  )
  seconds = time_steps({**configs, CHEAP: cheap}, dataset, repeats=repeats, steps=timing_steps)
  rows = []
  for name, history in histories.items():
    rows.append(
      {
        "method": name,
        "settings": _describe(SETTINGS[name]),
        "best_test_acc": max(h["test_acc"] for h in history),
        "final_test_acc": history[-1]["test_acc"],
        "final_noisy_train_acc": history[-1]["noisy_train_acc"],
        "ms_per_step": 1e3 * seconds[name],
        "time_vs_sgd": seconds[name] / seconds["SGD"],
      }
    )
  results = {
    "dataset": dataset.name,
    "realised_noise_rate": dataset.noise_rate,
    "model": "cnn1d",
    "epochs": epochs,
    "steps_per_epoch": len(histories["SGD"]) and histories["SGD"][0]["step"],
    "base_config": BASE.to_json(),
    "settings": SETTINGS,
    "rows": rows,
    "histories": histories,
    "timing": {
      "repeats": repeats,
      "steps_per_repeat": timing_steps,
      "ms_per_step": {name: 1e3 * t for name, t in seconds.items()},
      "time_vs_sgd": {name: t / seconds["SGD"] for name, t in seconds.items()},
    },
    "total_seconds": time.perf_counter() - start,
    "device": str(jax.devices()[0].device_kind),
    "jax_version": jax.__version__,
  }
  results["provenance"] = _report.provenance(
    "benchmarks.demo",
    command=command,
    seeds={"seed": BASE.seed},
    wall_time_s=results["total_seconds"],
  )
  out.mkdir(parents=True, exist_ok=True)
  (out / "demo.json").write_text(json.dumps(results, indent=2) + "\n")
  table = markdown_table(rows)
  footer = _report.markdown_footer(results["provenance"])
  (out / "demo.md").write_text(_markdown_report(results, table) + "\n" + footer)
  plot(histories, out / "demo.png", title=f"MNIST-1D, {NOISE} label noise, 1-D CNN")
  print(table)
  print(f"{CHEAP}: {seconds[CHEAP] / seconds['SGD']:.2f}× SGD per step (timed only).")
  print(f"\nTotal {results['total_seconds']:.0f} s. Wrote {out}/demo.{{png,json,md}}.")
  return results


def markdown_table(rows: list[dict[str, Any]]) -> str:
  """The results as a Markdown table."""
  lines = [
    "| method | settings | test acc. (best) | test acc. (final) | noisy-train acc. (final) "
    "| ms / step | time vs SGD |",
    "|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    lines.append(
      f"| {r['method']} | {r['settings']} | {r['best_test_acc']:.3f} | "
      f"{r['final_test_acc']:.3f} | {r['final_noisy_train_acc']:.3f} | "
      f"{r['ms_per_step']:.2f} | {r['time_vs_sgd']:.2f}× |"
    )
  return "\n".join(lines)


def _markdown_report(results: dict[str, Any], table: str) -> str:
  return (
    "# Demo: SGD vs SAM vs fSGLD on MNIST-1D with 40% symmetric label noise\n\n"
    f"Generated by `python -m benchmarks.demo` ({results['epochs']} epochs of "
    f"{results['steps_per_epoch']} steps, batch 128, 1-D CNN, learning rate "
    f"{BASE.lr:g} ×0.1 at 1/3 and 2/3, weight decay {BASE.weight_decay:g}; realised noise "
    f"rate {results['realised_noise_rate']:.3f}; {results['device']}, jax "
    f"{results['jax_version']}; total {results['total_seconds']:.0f} s).\n\n"
    "Test accuracy is on clean labels; noisy-train accuracy is the agreement with the "
    "noisy training labels (higher means more noise memorised). Time per step: median of "
    f"{results['timing']['repeats']} interleaved repeats of "
    f"{results['timing']['steps_per_repeat']} compiled steps, relative to SGD in the same "
    "process.\n\n"
    f"{table}\n\nTimed only (same settings, cheap draws: one random bit per weight for ε, "
    f"one byte for ξ): {CHEAP} takes {results['timing']['ms_per_step'][CHEAP]:.2f} ms per "
    f"step, {results['timing']['time_vs_sgd'][CHEAP]:.2f}× SGD.\n\n"
    "![test accuracy per epoch](demo.png)\n"
  )


def plot(histories: dict[str, list[dict[str, Any]]], path: Path, *, title: str) -> None:
  """Saves clean test accuracy (solid) and noisy-train accuracy (dashed) per epoch."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
  for i, (name, history) in enumerate(histories.items()):
    epochs = [h["epoch"] for h in history]
    color = f"C{i}"
    ax.plot(epochs, [h["test_acc"] for h in history], color=color, label=f"{name} test (clean)")
    ax.plot(
      epochs,
      [h["noisy_train_acc"] for h in history],
      color=color,
      linestyle="--",
      alpha=0.6,
      label=f"{name} train (noisy labels)",
    )
  ax.set_xlabel("epoch")
  ax.set_ylabel("accuracy")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def tune(*, epochs: int = EPOCHS, progress: bool = True, out: Path = RESULTS) -> list[dict]:
  """The validation-split check behind :data:`SETTINGS` (slow: 11 runs).

  Args:
    epochs: epochs per run.
    progress: show progress bars.
    out: directory for ``tune.md`` and ``tune.json``.

  Returns:
    One dict per run with its settings and final and best validation accuracy.
  """
  start = time.perf_counter()
  dataset = data.load_mnist1d(noise=NOISE, seed=BASE.seed, val_fraction=0.2)
  base = dataclasses.replace(BASE, epochs=epochs, val_fraction=0.2, progress=progress)
  results: list[dict[str, Any]] = []

  def run(label: str, **settings: Any) -> float:
    history = train(dataclasses.replace(base, **settings), dataset=dataset)
    final = history[-1]
    results.append(
      {
        "label": label,
        **{k: v for k, v in settings.items()},
        "final_val_acc": final["val_acc"],
        "final_val_clean_acc": final["val_clean_acc"],
        "best_val_acc": max(h["val_acc"] for h in history),
      }
    )
    print(f"{label}: final validation accuracy {final['val_acc']:.4f}", file=sys.stderr)
    return final["val_acc"]

  lrs = {lr: run(f"SGD lr={lr:g}", optimizer="sgd", lr=lr) for lr in (0.05, 0.1, 0.2)}
  lr = max(lrs, key=lambda k: lrs[k])
  for rho in (0.02, 0.05, 0.1, 0.2, 0.5):
    run(f"SAM lr={lr:g} ρ={rho:g}", optimizer="sam", lr=lr, rho=rho)
  for beta in (1e4, 1e5, 1e6, 1e7):
    sigma = beta ** (-(1 + BASE.eta) / 4)
    run(f"fSGLD lr={lr:g} β={beta:g} σ={sigma:.3f} (coupled)", optimizer="fsgld", lr=lr, beta=beta)
  command = "python -m benchmarks.demo --tune" + (f" --epochs {epochs}" if epochs != EPOCHS else "")
  record = _report.provenance(
    "benchmarks.demo",
    command=command,
    seeds={"seed": BASE.seed},
    wall_time_s=time.perf_counter() - start,
  )
  out.mkdir(parents=True, exist_ok=True)
  written = {"benchmark": "demo.tune", "runs": results, "provenance": record}
  (out / "tune.json").write_text(json.dumps(written, indent=2, default=str) + "\n")
  lines = [
    "# Validation check behind the demo's settings",
    "",
    f"`python -m benchmarks.demo --tune`: {epochs} epochs on 80% of the MNIST-1D training set "
    f"({NOISE} label noise), accuracy on the other 20% against its noisy labels "
    "(and its clean labels, for reference). The test set is not used.",
    "",
    "| run | final val. acc. (noisy) | best val. acc. (noisy) | final val. acc. (clean) |",
    "|---|---|---|---|",
    *(
      f"| {r['label']} | {r['final_val_acc']:.3f} | {r['best_val_acc']:.3f} | "
      f"{r['final_val_clean_acc']:.3f} |"
      for r in results
    ),
  ]
  (out / "tune.md").write_text("\n".join(lines) + "\n\n" + _report.markdown_footer(record))
  print("\n".join(lines))
  return results


def check(
  recorded: dict[str, Any], *, quick: bool = False, progress: bool = True
) -> list[_report.Check]:
  """Retrains the first epochs of the recorded runs and compares their histories."""
  base = dataclasses.replace(
    TrainConfig.from_json(recorded["base_config"]),
    epochs=recorded["epochs"],
    max_steps_per_epoch=recorded["steps_per_epoch"],
    progress=progress,
    stop_after=1 if quick else 2,
  )
  dataset = data.load_mnist1d(noise=NOISE, seed=base.seed)
  names = ["SGD", "fSGLD"] if quick else list(recorded["settings"])
  checks = []
  for name in names:
    history = train(dataclasses.replace(base, **recorded["settings"][name]), dataset=dataset)
    old = recorded["histories"][name][: len(history)]
    rtol, atol = _report.TRAINING_LOSS_RTOL, _report.TRAINING_ACC_ATOL
    for field, tolerance in (
      ("train_loss", (rtol, 0.0)),
      ("test_acc", (0.0, atol)),
      ("noisy_train_acc", (0.0, atol)),
    ):
      checks.append(
        _report.Check(
          f"{name}: {field}, epochs 1–{len(history)}",
          [h[field] for h in old],
          [h[field] for h in history],
          rtol=tolerance[0],
          atol=tolerance[1],
        )
      )
  return checks


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | list[dict]:
  """Command-line entry point (see the module docstring)."""
  parser = argparse.ArgumentParser(prog="python -m benchmarks.demo", description=__doc__)
  parser.add_argument("--quick", action="store_true", help="a few steps only (or check)")
  parser.add_argument("--tune", action="store_true", help="run the validation check")
  parser.add_argument("--check", action="store_true", help="rerun the first epochs, compare")
  parser.add_argument("--epochs", type=int, default=None)
  parser.add_argument("--out", type=Path, default=RESULTS)
  parser.add_argument("--no-progress", dest="progress", action="store_false")
  args = parser.parse_args(argv)
  if args.check:
    passed, report = _report.run_check(
      sys.modules[__name__], args.out / "demo.json", quick=args.quick, progress=args.progress
    )
    print(report)
    if not passed:
      raise SystemExit(1)
    return {"check": {"passed": passed, "report": report}}
  if args.tune:
    return tune(epochs=args.epochs or EPOCHS, progress=args.progress, out=args.out)
  if args.quick:
    return run_demo(
      epochs=args.epochs or 2,
      max_steps_per_epoch=3,
      out=args.out,
      repeats=2,
      timing_steps=2,
      progress=args.progress,
      command="python -m benchmarks.demo --quick"
      + (f" --epochs {args.epochs}" if args.epochs else ""),
    )
  epochs = args.epochs or EPOCHS
  return run_demo(
    epochs=epochs,
    out=args.out,
    progress=args.progress,
    command="python -m benchmarks.demo" + (f" --epochs {epochs}" if epochs != EPOCHS else ""),
  )


if __name__ == "__main__":
  main()
