r"""pSGLD on a 100:1 ill-conditioned Gaussian: the bias of dropping Γ, and ESS per gradient.

The target is :math:`\exp(-\beta U)` with :math:`U(\theta) = \tfrac12 (a_1 \theta_1^2 +
a_2 \theta_2^2)`, :math:`a = (100, 1)`, β = 1, so :math:`\operatorname{Var}\theta_i =
1/(\beta a_i)`. pSGLD's RMSprop statistic tends to :math:`V_i = \mathbb{E} g_i^2 = a_i/\beta`,
so its preconditioner :math:`G_i = 1/(\epsilon + \sqrt{V_i})` equalises the two coordinates.

What is measured (``python -m benchmarks.psgld``; ``--quick`` for a smoke run):

* **Bias against** ``decay``. For each decay ρ, independent chains of
  :func:`fsgld_optax.psgld` start at exact draws of the target, with V set to its limit
  :math:`a/\beta` (an adapted start, so that only the stationary behaviour is seen), and run
  ``burn_in + num_samples * thinning`` steps. The reported ratio is the measured variance
  over the stationary variance of the same chain with G *frozen* at that limit, which is
  known exactly for a Gaussian: :math:`1/(\beta a_i (1 - \lambda G_i a_i / 2))`. A ratio
  above 1 is the bias of dropping Γ: V follows the recent :math:`g^2 = a^2\theta^2`, so G is
  small where |θ| is large, the chain slows down in the tails and spends more time there.
  The bias scales with :math:`(1 - \rho)\,\tau_i`, the number of the chain's relaxation times
  :math:`\tau_i = 1/(\lambda G_i a_i)` that V's window :math:`1/(1-\rho)` does *not* cover.
  The standard error uses one mean of :math:`\theta_i^2` per chain (chains are independent).
* **Effective sample size per gradient against SGLD**, each at the largest step size whose
  frozen-preconditioner variance bias on the stiff coordinate is at most ``tolerated_bias``
  (SGLD: :math:`1/(1 - \lambda a_1/2) \le 1 + b`; pSGLD: the same with :math:`\lambda G_1
  a_1`), from the same adapted start; ESS of each coordinate by
  :func:`fsgld_optax.bayes.effective_sample_size` (bulk, over all chains), divided by the
  number of gradients the kept part of the chains took.

Writes ``psgld.json`` and ``psgld.md`` to the output folder. ``--check`` reruns the bias
sweep with new chains and compares the ratios statistically (:func:`check`).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

import fsgld_optax
from benchmarks import _report

__all__ = ["QUICK", "Config", "check", "main", "run"]


@dataclasses.dataclass(frozen=True)
class Config:
  """Settings of one run.

  Attributes:
    curvatures: the diagonal :math:`a` of the Gaussian's precision (times β).
    beta: inverse temperature β.
    learning_rate: pSGLD's step size in the bias sweep.
    decays: the RMSprop decays ρ of the bias sweep.
    eps: pSGLD's ε.
    tolerated_bias: the frozen-preconditioner variance bias that fixes each method's step
      size in the ESS comparison.
    ess_decay: pSGLD's decay in the ESS comparison.
    num_chains: independent chains per setting.
    burn_in: steps before the first kept state.
    num_samples: kept states per chain.
    thinning: steps between kept states.
    seed: seed of the chains.
  """

  curvatures: tuple[float, float] = (100.0, 1.0)
  beta: float = 1.0
  learning_rate: float = 0.01
  decays: tuple[float, ...] = (0.9, 0.99, 0.999, 0.9999)
  eps: float = 1e-5
  tolerated_bias: float = 0.05
  ess_decay: float = 0.9999
  num_chains: int = 1_000
  burn_in: int = 1_000
  num_samples: int = 200
  thinning: int = 50
  seed: int = 0


DEFAULT = Config()
QUICK = Config(decays=(0.99, 0.9999), num_chains=200, burn_in=200, num_samples=100, thinning=20)


def adapted_preconditioner(config: Config) -> np.ndarray:
  """:math:`G_i = 1/(\\epsilon + \\sqrt{a_i/\\beta})`, the limit of pSGLD's preconditioner."""
  a = np.asarray(config.curvatures)
  return 1.0 / (config.eps + np.sqrt(a / config.beta))


def frozen_variance(config: Config, step: np.ndarray) -> np.ndarray:
  r"""Stationary variance of θ' = θ − h a θ + sqrt(2h/β) ξ: :math:`1/(\beta a (1 - h a/2))`."""
  a = np.asarray(config.curvatures)
  return 1.0 / (config.beta * a * (1.0 - step * a / 2.0))


def tolerated_step(config: Config, preconditioner: np.ndarray) -> float:
  """The largest λ with frozen-preconditioner variance bias ≤ ``tolerated_bias`` on every axis."""
  a = np.asarray(config.curvatures)
  limit = 2.0 * (1.0 - 1.0 / (1.0 + config.tolerated_bias))  # h a at the tolerated bias
  return float(np.min(limit / (preconditioner * a)))


def with_second_moment(opt_state: Any, nu: jax.Array) -> Any:
  """``opt_state`` with pSGLD's running mean of squared gradients V set to ``nu``."""
  is_state = lambda s: isinstance(s, fsgld_optax.PreconditionedLangevinState)
  return jax.tree.map(
    lambda s: s._replace(nu=nu) if is_state(s) else s, opt_state, is_leaf=is_state
  )


def run_chains(config: Config, make_tx: Any, seed: int) -> np.ndarray:
  """Kept states of independent chains from an exact, adapted start: ``(chains, samples, 2)``."""
  a = jnp.asarray(config.curvatures)
  potential = lambda theta: 0.5 * jnp.sum(a * theta**2)

  def chain(key: jax.Array) -> jax.Array:
    init_key, run_key = jax.random.split(key)
    tx = make_tx(run_key)
    theta0 = jax.random.normal(init_key, (2,)) / jnp.sqrt(config.beta * a)
    grad_fn = fsgld_optax.perturbed_value_and_grad(potential)

    def step(carry: tuple[Any, Any], _: None) -> tuple[tuple[Any, Any], None]:
      theta, opt_state = carry
      _, grads = grad_fn(theta, opt_state)
      updates, opt_state = tx.update(grads, opt_state, theta)
      return (optax.apply_updates(theta, updates), opt_state), None

    def keep(carry: tuple[Any, Any], _: None) -> tuple[tuple[Any, Any], jax.Array]:
      carry, _ = jax.lax.scan(step, carry, length=config.thinning)
      return carry, carry[0]

    opt_state = with_second_moment(tx.init(theta0), a / config.beta)
    carry, _ = jax.lax.scan(step, (theta0, opt_state), length=config.burn_in)
    _, kept = jax.lax.scan(keep, carry, length=config.num_samples)
    return kept

  keys = jax.random.split(jax.random.key(seed), config.num_chains)
  out = jax.jit(jax.vmap(chain))(keys)
  return np.asarray(jax.block_until_ready(out), np.float64)


def variance_ratio(samples: np.ndarray, expected: np.ndarray) -> tuple[list[float], list[float]]:
  """Measured E θ² over ``expected``, per coordinate, and its standard error (chain means)."""
  per_chain = np.mean(samples**2, axis=1) / expected[None, :]
  return (
    per_chain.mean(axis=0).tolist(),
    (per_chain.std(axis=0, ddof=1) / math.sqrt(len(per_chain))).tolist(),
  )


def ess_per_gradient(samples: np.ndarray, config: Config) -> list[float]:
  """Bulk ESS of each coordinate over all chains, per gradient of the kept steps."""
  gradients = samples.shape[0] * samples.shape[1] * config.thinning
  ess = [float(fsgld_optax.bayes.effective_sample_size(samples[:, :, i])) for i in range(2)]
  return [e / gradients for e in ess]


def run(config: Config, *, progress: bool = True) -> dict[str, Any]:
  """Runs the bias sweep and the ESS comparison; returns the JSON-ready results."""
  start = time.perf_counter()
  g = adapted_preconditioner(config)
  bar = tqdm(total=len(config.decays) + 2, disable=not progress, desc="psgld")
  sweep = []
  for i, decay in enumerate(config.decays):
    make = lambda key, decay=decay: fsgld_optax.psgld(
      config.learning_rate, config.beta, decay=decay, eps=config.eps, key=key
    )
    samples = run_chains(config, make, config.seed + i)
    expected = frozen_variance(config, config.learning_rate * g)
    ratio, stderr = variance_ratio(samples, expected)
    relaxation = 1.0 / (config.learning_rate * g * np.asarray(config.curvatures))
    sweep.append(
      {
        "decay": decay,
        "ratio": ratio,
        "stderr": stderr,
        "window_over_relaxation": ((1 - decay) * relaxation).tolist(),
      }
    )
    bar.update()
  comparison = []
  for name, preconditioner in (("SGLD", np.ones(2)), ("pSGLD", g)):
    lr = tolerated_step(config, preconditioner)
    if name == "SGLD":
      make = lambda key, lr=lr: fsgld_optax.sgld(lr, config.beta, key=key)
    else:
      make = lambda key, lr=lr: fsgld_optax.psgld(
        lr, config.beta, decay=config.ess_decay, eps=config.eps, key=key
      )
    samples = run_chains(config, make, config.seed + 100)
    expected = frozen_variance(config, lr * preconditioner)
    ratio, stderr = variance_ratio(samples, expected)
    comparison.append(
      {
        "method": name,
        "learning_rate": lr,
        "ess_per_gradient": ess_per_gradient(samples, config),
        "variance_over_exact": (
          np.asarray(ratio) * expected * config.beta * np.asarray(config.curvatures)
        ).tolist(),
        "ratio_to_frozen": ratio,
        "stderr": stderr,
      }
    )
    bar.update()
  bar.close()
  sgld, psgld = comparison
  return {
    "config": dataclasses.asdict(config),
    "preconditioner": g.tolist(),
    "sweep": sweep,
    "comparison": comparison,
    "ess_ratio": [
      p / s for p, s in zip(psgld["ess_per_gradient"], sgld["ess_per_gradient"], strict=True)
    ],
    "wall_time_s": time.perf_counter() - start,
  }


#: ``--check``: independent chains per decay (``--quick``: a fifth), other draws.
CHECK_CHAINS = 500
#: ``--check``: allowed difference of a variance ratio, in standard errors of the difference.
CHECK_STANDARD_ERRORS = 4.0


def check(
  recorded: dict[str, Any], *, quick: bool = False, progress: bool = True
) -> list[_report.Check]:
  """Reruns the bias sweep with new, fewer chains; a statistical comparison of the ratios.

  Every decay of the recorded sweep (``quick``: the last) runs :data:`CHECK_CHAINS` new chains
  (``quick``: a fifth) from another seed; each variance ratio must agree with the recorded
  one within :data:`CHECK_STANDARD_ERRORS` standard errors of their difference, on any
  machine (never bitwise: other draws).
  """
  config = _report.config_from_json(Config, recorded["config"])
  chains = CHECK_CHAINS // 5 if quick else CHECK_CHAINS
  reduced = dataclasses.replace(config, num_chains=min(chains, config.num_chains))
  g = adapted_preconditioner(config)
  expected = frozen_variance(config, config.learning_rate * g)
  entries = recorded["sweep"][-1:] if quick else recorded["sweep"]
  checks = []
  for i, entry in enumerate(tqdm(entries, desc="check", disable=not progress)):
    make = lambda key, decay=entry["decay"]: fsgld_optax.psgld(
      config.learning_rate, config.beta, decay=decay, eps=config.eps, key=key
    )
    ratio, stderr = variance_ratio(run_chains(reduced, make, config.seed + 1000 + i), expected)
    for axis, name in enumerate(("stiff", "soft")):
      error = math.hypot(stderr[axis], entry["stderr"][axis])
      checks.append(
        _report.Check(
          f"decay {entry['decay']:g}, {name} axis: variance / exact ({reduced.num_chains} chains)",
          entry["ratio"][axis],
          ratio[axis],
          atol=CHECK_STANDARD_ERRORS * error,
          statistical=True,
        )
      )
  return checks


def markdown(results: dict[str, Any]) -> str:
  """The report: the bias sweep and the ESS comparison."""
  c = results["config"]
  steps = c["burn_in"] + c["num_samples"] * c["thinning"]
  lines = [
    "## pSGLD on a 100:1 Gaussian",
    "",
    f"U(θ) = ½(a₁θ₁² + a₂θ₂²), a = {tuple(c['curvatures'])}, β = {c['beta']}; "
    f"{c['num_chains']} chains per row from exact draws with V at its limit a/β, "
    f"{steps} steps ({c['burn_in']} burn-in, then every {c['thinning']}th state kept). "
    "Ratio = measured Var θᵢ over the stationary variance with G frozen at its limit "
    "(exact for a Gaussian); 1 means no bias from dropping Γ.",
    "",
    f"Bias against decay (λ = {c['learning_rate']}):",
    "",
    "| decay | ratio θ₁ (stiff) | ratio θ₂ (soft) | (1−ρ)τ₁ | (1−ρ)τ₂ |",
    "|---|---|---|---|---|",
  ]
  for row in results["sweep"]:
    r, s, w = row["ratio"], row["stderr"], row["window_over_relaxation"]
    lines.append(
      f"| {row['decay']} | {r[0]:.4f} ± {s[0]:.4f} | {r[1]:.4f} ± {s[1]:.4f} "
      f"| {w[0]:.3g} | {w[1]:.3g} |"
    )
  lines += [
    "",
    f"ESS per gradient, each method at the largest step with ≤ {c['tolerated_bias']:.0%} "
    f"frozen-preconditioner bias (pSGLD decay {c['ess_decay']}):",
    "",
    "| method | λ | ESS/gradient θ₁ | ESS/gradient θ₂ | Var/exact θ₁ | Var/exact θ₂ |",
    "|---|---|---|---|---|---|",
  ]
  for row in results["comparison"]:
    e, v = row["ess_per_gradient"], row["variance_over_exact"]
    lines.append(
      f"| {row['method']} | {row['learning_rate']:.3g} | {e[0]:.3g} | {e[1]:.3g} "
      f"| {v[0]:.4f} | {v[1]:.4f} |"
    )
  ratio = results["ess_ratio"]
  lines += [
    "",
    f"pSGLD/SGLD ESS per gradient: θ₁ {ratio[0]:.1f}x, θ₂ {ratio[1]:.1f}x "
    "(√κ = 10 is the ratio of the two tolerated step sizes on the soft axis).",
    "",
    f"Wall time {results['wall_time_s']:.0f} s.",
  ]
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """``python -m benchmarks.psgld [--quick] [--check] [--out DIR] [--no-progress]``."""
  return _report.main(argv, sys.modules[__name__])


if __name__ == "__main__":
  main()
