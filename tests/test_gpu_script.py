"""The one-command accelerator benchmark, ``bash benchmarks/gpu.sh --quick``, on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from benchmarks import gpu

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("gpu")
  env = os.environ | {"PYTHON": sys.executable, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  proc = subprocess.run(
    ["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--quick", "--no-progress", "--out", str(out)],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  (path,) = out.glob("gpu_*_quick.json")
  return json.loads(path.read_text()), path.with_suffix(".md").read_text()


def test_every_method_is_timed_against_its_base_optimizer(quick_run):
  results, report = quick_run
  assert results["quick"] is True and results["device"]["platform"] == "cpu"
  (workload,) = results["workloads"]
  rows = {r["name"]: r for r in workload["rows"]}
  assert list(rows) == [m.name for m in gpu.QUICK.workloads[0].methods]
  for name, base in (("fSGHMC (default)", "SGD-M"), ("RWP-AdamW", "AdamW"), ("SAM", "SGD")):
    assert rows[name]["baseline"] == base
    assert rows[name]["ratio_to_baseline"] == pytest.approx(
      rows[name]["median_s"] / rows[base]["median_s"]
    )
  assert rows["SGD"]["ratio_to_baseline"] == 1.0
  untimed = rows["fSGLD n=2 split (default)"]
  assert untimed["median_s"] is None and untimed["memory"]["temp"] is not None
  assert "| fSGHMC (default) | SGD-M |" in report and "## Random-number throughput" in report
  assert results["provenance"]["command"] == "bash benchmarks/gpu.sh --quick"


def test_random_number_throughput_of_every_key_implementation(quick_run):
  results, report = quick_run
  seen = {(r["impl"], r["sampler"]) for r in results["rng"]}
  assert seen == {(i, s) for i in gpu.KEY_IMPLS for s in gpu.samplers()}
  for r in results["rng"]:
    assert r["size"] == gpu.QUICK.rng_size and r["numbers_per_s"] > 0
  for impl in gpu.KEY_IMPLS:
    assert f"| {impl} |" in report


def test_samplers_draw_standard_noise():
  """Each measured sampler draws mean-0, variance-1 numbers (tolerances: 5 standard errors)."""
  n = 20000
  x = jnp.zeros((n,), jnp.float32)
  for impl in gpu.KEY_IMPLS:
    for name, sampler in gpu.samplers().items():
      draws = sampler(jax.random.key(0, impl=impl), x)
      assert draws.shape == (n,) and draws.dtype == jnp.float32, (impl, name)
      # Mean has standard error 1/sqrt(n); the variance of a unit-variance draw has standard
      # error at most sqrt(2/n) (Gaussian; 0 for Rademacher).
      assert abs(float(draws.mean())) < 5 / n**0.5, (impl, name)
      assert abs(float(draws.var()) - 1) < 5 * (2 / n) ** 0.5, (impl, name)
