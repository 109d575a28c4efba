"""The example scripts run, with tiny settings, and say what they claim."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_example(name: str):
  spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
  assert spec is not None and spec.loader is not None
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


TINY = ["--seeds", "2", "--steps", "6", "--pretrain-steps", "6", "--hidden", "16"]


def test_rwp_adamw_finetune_runs_and_reports_paired_seeds(capsys):
  example = load_example("rwp_adamw_finetune")
  out = example.main(TINY)
  assert len(out["runs"]) == 2
  for run in out["runs"]:
    assert set(run) == {"AdamW", "RWP-AdamW"}
    assert all(0.0 <= acc <= 1.0 for acc in run.values())
  printed = capsys.readouterr().out
  assert "seed 1: test accuracy AdamW" in printed and "RWP-AdamW − AdamW" in printed


def test_rwp_adamw_finetune_at_sigma_zero_is_adamw():
  """σ = 0: the gradient at θ + ε is the plain one, so both fine-tunings end the same."""
  example = load_example("rwp_adamw_finetune")
  out = example.main([*TINY, "--sigma", "0"])
  for run in out["runs"]:
    assert run["RWP-AdamW"] == run["AdamW"]


def test_rwp_adamw_finetune_rejects_bad_options():
  example = load_example("rwp_adamw_finetune")
  with pytest.raises(SystemExit):
    example.main(["--sigma", "-1"])
  with pytest.raises(SystemExit):
    example.main(["--shots", "0"])
