"""Smoke tests of ``python -m benchmarks.bayesian``: the quick MNIST-1D run and the CIFAR command.

Both run in process into a temporary folder (never ``benchmarks/results/``). The CIFAR
command runs on small fake CIFAR-10 batches and a fake SVHN ``test_32x32.mat`` that the test
writes in the official formats.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io

from benchmarks import bayesian

pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_outputs(out: Path, name: str, methods: list[str]) -> dict[str, Any]:
  results = json.loads((out / f"{name}.json").read_text())
  assert (out / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
  text = (out / f"{name}.md").read_text()
  for label in ("NLL", "ECE", "AUROC"):
    assert label in text
  assert set(results["summary"]) == set(methods)
  for method, summary in results["summary"].items():
    assert f"| {bayesian.LABELS[method]} |" in text
    for metric in bayesian.METRICS:
      mean = summary[metric]["mean"]
      assert math.isfinite(mean), (method, metric)
      if metric != "nll":
        assert 0.0 <= mean <= (2.0 if metric == "brier" else 1.0), (method, metric, mean)
    assert sum(summary["calibration_bins"]["count"]) == results["data"]["num_test"] * len(
      summary["runs"]
    )
  return results


def test_quick_run(tmp_path: Path) -> None:
  results = bayesian.main(["--quick", "--no-progress", "--out", str(tmp_path)])
  assert results["quick"] is True
  written = _check_outputs(tmp_path, "bayesian", list(bayesian.METHODS))
  d = written["data"]
  assert d["total_steps"] == 4 * 2 * 3
  for method in bayesian.SAMPLERS:
    summary = written["summary"][method]
    assert all(r["samples"] == 4 for r in summary["runs"])  # 4 cycles x 1 sample
    assert summary["function_space"]["draws"] == 8
  assert all(r["samples"] == 4 for r in written["summary"]["ensemble"]["runs"])
  assert all(r["samples"] == 1 for r in written["summary"]["sgd"]["runs"])
  assert set(written["paired"]) == {"cfsgld-csgld", "cfsghmc-csghmc", "cfsgld-sgd", "cfsghmc-sgd"}
  # --check retrains seed 0 of SGD and cfSGLD and reproduces all six recorded metrics bit
  # for bit (same machine).
  check = bayesian.main(["--check", "--quick", "--no-progress", "--out", str(tmp_path)])
  report = check["check"]["report"]
  assert check["check"]["passed"] and "bitwise" in report and "12 quantities" in report


def _fake_cifar(root: Path, per_batch: int = 24) -> None:
  folder = root / "cifar-10-batches-py"
  folder.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
    entry = {
      b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
      b"labels": rng.integers(0, 10, per_batch).tolist(),
    }
    with open(folder / name, "wb") as f:
      pickle.dump(entry, f)


def test_cifar_command_on_fake_files(tmp_path: Path) -> None:
  _fake_cifar(tmp_path / "data")
  rng = np.random.default_rng(1)
  svhn = {
    "X": rng.integers(0, 256, (32, 32, 3, 20), dtype=np.uint8),
    "y": rng.integers(1, 11, (20, 1)),
  }
  scipy.io.savemat(tmp_path / "data" / "test_32x32.mat", svhn)
  out = tmp_path / "out"
  argv = ["cifar", "--data-dir", str(tmp_path / "data"), "--svhn", str(tmp_path / "data")]
  argv += ["--model", "resnet-mini", "--width", "4", "--batch-size", "16"]
  argv += ["--cycles", "2", "--epochs-per-cycle", "2", "--samples-per-cycle", "2"]
  argv += ["--exploration-fraction", "0.25", "--max-steps-per-epoch", "2"]
  argv += ["--methods", "cfsgld", "--seeds", "3", "--sample-dir", str(tmp_path / "samples")]
  argv += ["--out", str(out), "--no-progress"]
  results = bayesian.main(argv)
  written = _check_outputs(out, "bayesian_cifar10", ["cfsgld"])
  assert written["data"]["num_ood"] == 20 and written["data"]["num_test"] == 24
  assert written["data"]["total_steps"] == 2 * 2 * 2
  assert written["provenance"]["command"].startswith("python -m benchmarks.bayesian cifar")
  assert results["config"]["temperature"] is None  # default T = 1/N
  # Samples kept on disk (orbax), 2 cycles x 2.
  assert len(list((tmp_path / "samples" / "cfsgld_seed3").iterdir())) == 4
  assert written["summary"]["cfsgld"]["runs"][0]["samples"] == 4


def test_svhn_loader_checks_the_file(tmp_path: Path) -> None:
  with pytest.raises(FileNotFoundError, match=r"test_32x32\.mat"):
    bayesian.load_svhn(tmp_path)
  np.savez(tmp_path / "bad.npz", x=np.zeros((2, 28, 28, 3), np.uint8))
  with pytest.raises(ValueError, match=r"expected uint8 images \(N, 32, 32, 3\)"):
    bayesian.load_svhn(tmp_path / "bad.npz")
