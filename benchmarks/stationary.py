r"""The stationary law of fSGLD on a 1-D double well: exp(−β U_σ), not exp(−β U).

fSGLD takes each gradient at a perturbed point θ + σz, z ~ N(0, 1), so in expectation it
follows the gradient of the smoothed potential U_σ(θ) = E U(θ + σz), and its stationary law
is (up to the step-size bias) the Gibbs law of U_σ instead of U:

.. math::

  \pi_\sigma(\theta) \propto \exp(-\beta\, U_\sigma(\theta)), \qquad
  U_\sigma(\theta) = \mathbb{E}_z\, U(\theta + \sigma z)
    = U(\theta) + \tfrac{\sigma^2}{2}\, U''(\theta) + O(\sigma^4).

The potential has one sharp and one flat basin of *equal depth*,

.. math::

  U(\theta) = (\theta^2 - 1)^2\, \bigl(a + b \tanh\theta\bigr), \qquad
  a = \frac{\kappa_s + \kappa_f}{16}, \quad b = \frac{\kappa_f - \kappa_s}{16 \tanh 1},

so that U(−1) = U(1) = 0 (both minima exactly at height 0), U''(−1) = κ_s = 24 (sharp) and
U''(1) = κ_f = 6 (flat), with a barrier of height ≈ 2 near θ* ≈ −0.165 and quartic tails.
With β = 1.5 the Gibbs law exp(−β U) already puts about 65% of its mass in the flat basin
(Laplace: the mass of a basin scales like κ^{-1/2}); smoothing lifts the sharp minimum by
about σ²κ_s/2 and the flat one by only σ²κ_f/2, so exp(−β U_σ) moves more mass to the flat
basin (about 78% at σ = 0.3). The flat-basin mass is the mass of θ > θ*, with θ* the top of
the barrier of U.

What is measured (``python -m benchmarks.stationary``; ``--quick`` for a smoke run):

* Many independent chains (vmapped :func:`fsgld_optax.sample`, one key per chain) of SGLD
  (σ = 0) and of fSGLD (σ = 0.3), all started uniformly in [−1.5, 1.5]; the final state of
  each chain is one independent draw.
* Exact laws on a fine grid, with U_σ computed by Gauss–Hermite quadrature
  (``numpy.polynomial.hermite_e.hermegauss``; the quadrature error is reported).
* Total-variation distance between the empirical histogram and each exact law (binned), and
  the Monte-Carlo noise floor: the mean and 95% quantile of the TV between the exact law and
  the histogram of an exact sample of the same size.
* The flat-basin mass, exact and empirical (with its binomial standard error), and its
  σ sweep.
* Discretisation bias, without Monte-Carlo noise: the stationary law of the *discrete*
  chain θ' = θ − λ U'(θ + σz) + sqrt(2λ/β) ξ is computed exactly on a grid (its transition
  kernel, with the z-average by Gauss–Hermite, and the invariant vector by a linear solve)
  and compared with exp(−β U_σ), at the step size used and at twice that step.
* Burn-in: the flat-basin mass of the chains at several times; the last two must agree
  within the Monte-Carlo error.

Writes ``stationary.json``, ``stationary.md`` and ``stationary.png`` to the output folder.
``--check`` recomputes the exact quantities (barrier top, exact flat-basin masses,
quadrature error; with the full check also the discrete-chain laws) and compares them with a
results file, bitwise on its machine and within 1e-9 elsewhere (float64 NumPy and LAPACK);
the full check also reruns :data:`CHECK_CHAINS` chains of SGLD and of fSGLD and compares
their flat-basin mass with the recorded one within four binomial standard errors.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from tqdm.auto import tqdm

import fsgld_optax
from benchmarks import _report

__all__ = ["Config", "check", "main", "run"]

KAPPA_SHARP = 24.0
KAPPA_FLAT = 6.0
_A = (KAPPA_SHARP + KAPPA_FLAT) / 16
_B = (KAPPA_FLAT - KAPPA_SHARP) / (16 * math.tanh(1.0))


@dataclasses.dataclass(frozen=True)
class Config:
  """Settings of one run.

  Attributes:
    beta: inverse temperature β.
    sigma: the perturbation scale of the main fSGLD comparison.
    sweep_sigmas: σ values of the flat-basin-mass sweep (σ = 0 and ``sigma`` are reused).
    learning_rate: step size λ.
    num_steps: steps per chain (time ``num_steps * learning_rate``).
    num_chains: chains of the main comparison (SGLD and fSGLD at ``sigma``).
    sweep_chains: chains per σ of the sweep.
    num_snapshots: states kept per chain (evenly spaced) for the burn-in check.
    bins: histogram bins on ``[-hist_range, hist_range]`` (plus two overflow bins).
    hist_range: half-width of the histogram.
    quadrature_nodes: Gauss–Hermite nodes for U_σ.
    kernel_grid: grid points of the discrete-chain kernel check.
    floor_draws: exact samples drawn for the TV noise floor.
    seed: seed of the chains.
  """

  beta: float = 1.5
  sigma: float = 0.3
  sweep_sigmas: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
  learning_rate: float = 1e-3
  num_steps: int = 30_000
  num_chains: int = 20_000
  sweep_chains: int = 10_000
  num_snapshots: int = 10
  bins: int = 80
  hist_range: float = 2.5
  quadrature_nodes: int = 64
  kernel_grid: int = 1_600
  floor_draws: int = 2_000
  seed: int = 0


DEFAULT = Config()
QUICK = Config(
  learning_rate=2e-3,
  num_steps=2_000,
  num_chains=4_000,
  sweep_chains=2_000,
  sweep_sigmas=(0.0, 0.3, 0.5),
  num_snapshots=4,
  kernel_grid=600,
  floor_draws=200,
)


# --------------------------------------------------------------------------------------
# The potential and its exact laws
# --------------------------------------------------------------------------------------


def potential(theta: jax.Array) -> jax.Array:
  """U(θ) = (θ² − 1)² (a + b tanh θ): minima U(±1) = 0 with U''(−1) = 24, U''(1) = 6."""
  return (theta**2 - 1) ** 2 * (_A + _B * jnp.tanh(theta))


def potential_np(theta: np.ndarray) -> np.ndarray:
  """:func:`potential` in float64 NumPy."""
  return (theta**2 - 1) ** 2 * (_A + _B * np.tanh(theta))


def potential_grad_np(theta: np.ndarray) -> np.ndarray:
  """U'(θ) = 4θ(θ² − 1)(a + b tanh θ) + (θ² − 1)² b (1 − tanh² θ), in float64."""
  t = np.tanh(theta)
  return 4 * theta * (theta**2 - 1) * (_A + _B * t) + (theta**2 - 1) ** 2 * _B * (1 - t**2)


def gauss_hermite(num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
  """Nodes and weights (summing to 1) of E f(z), z ~ N(0, 1)."""
  nodes, weights = hermegauss(num_nodes)
  return nodes, weights / weights.sum()


def smoothed(
  fn: Callable[[np.ndarray], np.ndarray], theta: np.ndarray, sigma: float, num_nodes: int
) -> np.ndarray:
  """E fn(θ + σz), z ~ N(0, 1), by Gauss–Hermite quadrature (``fn`` itself at σ = 0)."""
  if sigma == 0:
    return fn(theta)
  nodes, weights = gauss_hermite(num_nodes)
  return fn(theta[:, None] + sigma * nodes[None, :]) @ weights


def barrier_top() -> float:
  """θ*, the top of the barrier of U between the two minima."""
  grid = np.linspace(-0.999, 0.999, 200_001)
  return float(grid[np.argmax(potential_np(grid))])


@dataclasses.dataclass(frozen=True)
class ExactLaw:
  """exp(−β U_σ) on a grid: density, CDF and derived quantities."""

  grid: np.ndarray
  density: np.ndarray
  cdf: np.ndarray

  def probabilities(self, edges: np.ndarray) -> np.ndarray:
    """Probabilities of the bins ``edges``, plus an overflow bin at each end."""
    at_edges = np.interp(edges, self.grid, self.cdf)
    return np.concatenate([[at_edges[0]], np.diff(at_edges), [1 - at_edges[-1]]])

  def mass_above(self, threshold: float) -> float:
    """P(θ > threshold)."""
    return float(1 - np.interp(threshold, self.grid, self.cdf))


def exact_law(beta: float, sigma: float, num_nodes: int) -> ExactLaw:
  """The normalised law ∝ exp(−β U_σ) on [−4, 4] (its mass outside is below 1e-30)."""
  grid = np.linspace(-4.0, 4.0, 160_001)
  energy = smoothed(potential_np, grid, sigma, num_nodes)
  density = np.exp(-beta * (energy - energy.min()))
  cdf = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(grid))])
  return ExactLaw(grid, density / cdf[-1], cdf / cdf[-1])


def discrete_chain_law(
  beta: float, sigma: float, learning_rate: float, num_points: int
) -> tuple[np.ndarray, np.ndarray]:
  """The exact stationary law of the discretised chain, on a grid.

  The chain is θ' = θ − λ U'(θ + σz) + sqrt(2λ/β) ξ with z, ξ ~ N(0, 1), so its transition
  density is E_z N(θ'; θ − λ U'(θ + σz), 2λ/β); the z-average is done by Gauss–Hermite
  quadrature, the kernel is discretised on a uniform grid and row-normalised, and the
  invariant probability vector π solves π (I − P + 𝟙𝟙ᵀ) = 𝟙ᵀ.

  Returns:
    The grid and the invariant probabilities of its points.
  """
  grid = np.linspace(-2.6, 2.8, num_points)
  scale = math.sqrt(2 * learning_rate / beta)
  if sigma == 0:
    drifts = (grid - learning_rate * potential_grad_np(grid))[:, None]
    weights = np.ones(1)
  else:
    nodes, weights = gauss_hermite(32)
    drifts = grid[:, None] - learning_rate * potential_grad_np(grid[:, None] + sigma * nodes)
  kernel = np.zeros((num_points, num_points))
  for q, w in enumerate(weights):
    z = (grid[None, :] - drifts[:, q : q + 1]) / scale
    kernel += w * np.exp(-0.5 * z**2)
  kernel /= kernel.sum(axis=1, keepdims=True)
  system = np.eye(num_points) - kernel + 1.0
  pi = np.linalg.solve(system.T, np.ones(num_points))
  return grid, pi / pi.sum()


# --------------------------------------------------------------------------------------
# Chains
# --------------------------------------------------------------------------------------


def run_chains(
  sigma: float, config: Config, num_chains: int, learning_rate: float, seed: int
) -> np.ndarray:
  """Final states of independent chains, shape ``(num_snapshots, num_chains)``.

  Each chain is :func:`fsgld_optax.sample` with its own key (σ = 0: :func:`fsgld_optax.sgld`)
  from a start drawn uniformly in [−1.5, 1.5]; the states at ``num_snapshots`` evenly spaced
  times are kept.
  """
  thinning = config.num_steps // config.num_snapshots

  def chain(key: jax.Array) -> jax.Array:
    init_key, run_key = jax.random.split(key)
    if sigma == 0:
      tx = fsgld_optax.sgld(learning_rate, config.beta, key=run_key)
    else:
      tx = fsgld_optax.fsgld(learning_rate, config.beta, sigma=sigma, key=run_key)
    theta0 = jax.random.uniform(init_key, (), minval=-1.5, maxval=1.5)
    samples, _, _ = fsgld_optax.sample(
      potential, theta0, tx, num_samples=config.num_snapshots, thinning=thinning
    )
    return samples

  keys = jax.random.split(jax.random.key(seed), num_chains)
  out = jax.jit(jax.vmap(chain))(keys)
  return np.asarray(jax.block_until_ready(out), np.float64).T


def histogram(samples: np.ndarray, edges: np.ndarray) -> np.ndarray:
  """Bin frequencies, with an overflow bin at each end (same layout as ``probabilities``)."""
  inner = np.histogram(samples, edges)[0]
  counts = np.concatenate([[np.sum(samples < edges[0])], inner, [np.sum(samples >= edges[-1])]])
  return counts / len(samples)


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
  """½ Σ |p − q| over bins."""
  return float(0.5 * np.abs(p - q).sum())


def tv_noise_floor(probs: np.ndarray, size: int, draws: int, seed: int) -> dict[str, float]:
  """TV between ``probs`` and the histogram of ``size`` exact draws: mean and 95% quantile."""
  rng = np.random.default_rng(seed)
  counts = rng.multinomial(size, probs / probs.sum(), size=draws)
  tv = 0.5 * np.abs(counts / size - probs[None, :]).sum(axis=1)
  return {"mean": float(tv.mean()), "q95": float(np.quantile(tv, 0.95))}


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------


def run(config: Config, *, progress: bool = True) -> dict[str, Any]:
  """Runs the chains and the exact computations; returns the JSON-ready results."""
  start = time.perf_counter()
  threshold = barrier_top()
  edges = np.linspace(-config.hist_range, config.hist_range, config.bins + 1)
  sigmas = sorted({0.0, config.sigma, *config.sweep_sigmas})
  laws = {s: exact_law(config.beta, s, config.quadrature_nodes) for s in sigmas}
  quadrature_error = max(
    float(
      np.max(
        np.abs(
          smoothed(potential_np, laws[s].grid[::100], s, config.quadrature_nodes)
          - smoothed(potential_np, laws[s].grid[::100], s, 2 * config.quadrature_nodes)
        )[np.abs(laws[s].grid[::100]) < 3]
      )
    )
    for s in sigmas
  )

  jobs: list[tuple[str, float, int]] = [
    ("sgld", 0.0, config.num_chains),
    ("fsgld", config.sigma, config.num_chains),
  ]
  jobs += [(f"sweep:{s:g}", s, config.sweep_chains) for s in sigmas if s not in (0.0, config.sigma)]
  chains: dict[str, np.ndarray] = {}
  bar = tqdm(jobs, desc="stationary: chains", disable=not progress)
  for i, (name, sigma, n) in enumerate(bar):
    bar.set_postfix_str(f"{name} ({n} chains x {config.num_steps} steps)")
    chains[name] = run_chains(sigma, config, n, config.learning_rate, config.seed + i)

  def summary(name: str, sigma: float) -> dict[str, Any]:
    snapshots = chains[name]
    final = snapshots[-1]
    n = len(final)
    law = laws[sigma]
    probs = law.probabilities(edges)
    freq = histogram(final, edges)
    exact_mass = law.mass_above(threshold)
    emp_mass = float(np.mean(final > threshold))
    return {
      "sigma": sigma,
      "num_chains": n,
      "tv_to_smoothed_law": total_variation(freq, probs),
      "tv_to_unsmoothed_law": total_variation(freq, laws[0.0].probabilities(edges)),
      "tv_to_smoothed_law_half_time": total_variation(histogram(snapshots[-2], edges), probs)
      if len(snapshots) > 1
      else None,
      "tv_noise_floor": tv_noise_floor(probs, n, config.floor_draws, config.seed),
      "flat_mass_exact": exact_mass,
      "flat_mass_exact_unsmoothed": laws[0.0].mass_above(threshold),
      "flat_mass_empirical": emp_mass,
      "flat_mass_stderr": math.sqrt(exact_mass * (1 - exact_mass) / n),
      "flat_mass_over_time": [float(np.mean(s > threshold)) for s in snapshots],
      "snapshot_times": [
        (k + 1) * (config.num_steps // config.num_snapshots) * config.learning_rate
        for k in range(len(snapshots))
      ],
    }

  main_results = {"sgld": summary("sgld", 0.0), "fsgld": summary("fsgld", config.sigma)}
  sweep = []
  for s in sigmas:
    name = "sgld" if s == 0.0 else "fsgld" if s == config.sigma else f"sweep:{s:g}"
    row = summary(name, s)
    sweep.append(
      {k: row[k] for k in ("sigma", "num_chains", "flat_mass_exact")}
      | {
        "flat_mass_empirical": row["flat_mass_empirical"],
        "flat_mass_stderr": row["flat_mass_stderr"],
        "tv_to_smoothed_law": row["tv_to_smoothed_law"],
        "tv_noise_floor_mean": row["tv_noise_floor"]["mean"],
      }
    )

  discretisation = []
  for sigma in (0.0, config.sigma):
    law = laws[sigma]
    for factor in (1, 2):
      lr = factor * config.learning_rate
      grid, pi = discrete_chain_law(config.beta, sigma, lr, config.kernel_grid)
      spacing = grid[1] - grid[0]
      cell_edges = np.concatenate([[grid[0] - spacing / 2], grid + spacing / 2])
      exact_cells = np.diff(np.interp(cell_edges, law.grid, law.cdf))
      discretisation.append(
        {
          "sigma": sigma,
          "learning_rate": lr,
          "tv_discrete_vs_exact": total_variation(pi, exact_cells / exact_cells.sum()),
          "flat_mass_discrete": float(pi[grid > threshold].sum()),
          "flat_mass_exact": law.mass_above(threshold),
        }
      )

  return {
    "benchmark": "stationary",
    "potential": "U(θ) = (θ² − 1)² (a + b tanh θ), a = (κs + κf)/16, b = (κf − κs)/(16 tanh 1)",
    "kappa_sharp": KAPPA_SHARP,
    "kappa_flat": KAPPA_FLAT,
    "barrier_top": threshold,
    "barrier_height": float(potential_np(np.asarray(threshold))),
    "config": dataclasses.asdict(config),
    "quadrature_max_abs_error": quadrature_error,
    "main": main_results,
    "sigma_sweep": sweep,
    "discretisation": discretisation,
    "histograms": {
      "edges": edges.tolist(),
      "sgld": histogram(chains["sgld"][-1], edges)[1:-1].tolist(),
      "fsgld": histogram(chains["fsgld"][-1], edges)[1:-1].tolist(),
    },
    "environment": _report.environment(),
    "wall_time_s": time.perf_counter() - start,
  }


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
  """The Markdown report of :func:`run`'s results."""
  c = results["config"]
  m = results["main"]
  lines = [
    "## Stationary law on a 1-D double well",
    "",
    f"U(θ) = (θ² − 1)² (a + b tanh θ): minima U(−1) = U(1) = 0, curvature "
    f"{results['kappa_sharp']:g} (sharp, θ = −1) and {results['kappa_flat']:g} (flat, θ = 1), "
    f"barrier {results['barrier_height']:.2f} at θ* = {results['barrier_top']:.3f}. "
    f"β = {c['beta']:g}, λ = {c['learning_rate']:g}, {c['num_steps']} steps "
    f"(time {c['num_steps'] * c['learning_rate']:g}), final state of each chain. "
    f"Flat-basin mass = P(θ > θ*). TV on {c['bins']} bins over "
    f"[−{c['hist_range']:g}, {c['hist_range']:g}] plus two overflow bins; the noise floor is the "
    "TV of an exact sample of the same size (mean / 95% quantile).",
    "",
    "| chain | σ | chains | TV to exp(−βU_σ) | TV to exp(−βU) | TV noise floor | "
    "flat mass: exp(−βU) | flat mass: exp(−βU_σ) | flat mass: chains |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for name, label in (("sgld", "SGLD"), ("fsgld", "fSGLD")):
    r = m[name]
    lines.append(
      f"| {label} | {r['sigma']:g} | {r['num_chains']} | {r['tv_to_smoothed_law']:.4f} | "
      f"{r['tv_to_unsmoothed_law']:.4f} | {r['tv_noise_floor']['mean']:.4f} / "
      f"{r['tv_noise_floor']['q95']:.4f} | {r['flat_mass_exact_unsmoothed']:.4f} | "
      f"{r['flat_mass_exact']:.4f} | {r['flat_mass_empirical']:.4f} ± "
      f"{r['flat_mass_stderr']:.4f} |"
    )
  lines += [
    "",
    "For SGLD (σ = 0) the two exact laws coincide. "
    "σ sweep of the flat-basin mass (fSGLD; σ = 0 is SGLD):",
    "",
    "| σ | chains | exact exp(−βU_σ) | chains (± s.e.) | TV to exp(−βU_σ) | TV noise floor |",
    "|---|---|---|---|---|---|",
  ]
  for r in results["sigma_sweep"]:
    lines.append(
      f"| {r['sigma']:g} | {r['num_chains']} | {r['flat_mass_exact']:.4f} | "
      f"{r['flat_mass_empirical']:.4f} ± {r['flat_mass_stderr']:.4f} | "
      f"{r['tv_to_smoothed_law']:.4f} | {r['tv_noise_floor_mean']:.4f} |"
    )
  lines += [
    "",
    "Discretisation bias, computed exactly (no Monte-Carlo noise): the invariant law of the "
    "discrete chain θ' = θ − λU'(θ + σz) + √(2λ/β) ξ on a "
    f"{c['kernel_grid']}-point grid against exp(−βU_σ):",
    "",
    "| σ | λ | TV(discrete chain, exp(−βU_σ)) | flat mass: discrete chain | flat mass: exact |",
    "|---|---|---|---|---|",
  ]
  for r in results["discretisation"]:
    lines.append(
      f"| {r['sigma']:g} | {r['learning_rate']:g} | {r['tv_discrete_vs_exact']:.4f} | "
      f"{r['flat_mass_discrete']:.4f} | {r['flat_mass_exact']:.4f} |"
    )
  times = m["sgld"]["snapshot_times"]
  lines += [
    "",
    "Burn-in check, flat-basin mass of the chains over time "
    f"(t = {', '.join(f'{t:g}' for t in times)}):",
    "",
    f"- SGLD: {', '.join(f'{v:.4f}' for v in m['sgld']['flat_mass_over_time'])}",
    f"- fSGLD: {', '.join(f'{v:.4f}' for v in m['fsgld']['flat_mass_over_time'])}",
    "",
    f"Gauss–Hermite quadrature ({c['quadrature_nodes']} nodes) differs from twice as many "
    f"nodes by at most {results['quadrature_max_abs_error']:.1e} on |θ| < 3. "
    f"Wall time {results['wall_time_s']:.0f} s ({results['environment']['backend']}).",
    "",
  ]
  return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
  """Histograms with both exact densities, the potentials, and the σ sweep."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  c = results["config"]
  edges = np.asarray(results["histograms"]["edges"])
  widths = np.diff(edges)
  grid = np.linspace(-2.2, 2.5, 1_000)
  beta, sigma = c["beta"], c["sigma"]
  exact = {s: exact_law(beta, s, c["quadrature_nodes"]) for s in (0.0, sigma)}
  fig, axes = plt.subplots(1, 4, figsize=(18, 4))
  ax = axes[0]
  ax.plot(grid, potential_np(grid), label="U")
  ax.plot(
    grid, smoothed(potential_np, grid, sigma, c["quadrature_nodes"]), label=f"U_σ, σ={sigma:g}"
  )
  ax.axvline(results["barrier_top"], color="grey", ls=":", lw=1)
  ax.set_ylim(-0.5, 6)
  ax.set_title("potential")
  ax.set_xlabel("θ")
  ax.legend()
  for ax, name, label in (
    (axes[1], "sgld", "SGLD (σ=0)"),
    (axes[2], "fsgld", f"fSGLD (σ={sigma:g})"),
  ):
    freq = np.asarray(results["histograms"][name])
    ax.bar(edges[:-1], freq / widths, width=widths, align="edge", alpha=0.4, label=label)
    for s, style in ((0.0, "-"), (sigma, "--")):
      law = exact[s]
      ax.plot(
        grid,
        np.interp(grid, law.grid, law.density),
        style,
        label="exp(−βU)" if s == 0 else f"exp(−βU_σ), σ={sigma:g}",
      )
    r = results["main"][name]
    if name == "sgld":
      ax.set_title(f"{label}\nTV to exp(−βU) = {r['tv_to_unsmoothed_law']:.3f}")
    else:
      ax.set_title(
        f"{label}\nTV to exp(−βU_σ) = {r['tv_to_smoothed_law']:.3f}, "
        f"to exp(−βU) = {r['tv_to_unsmoothed_law']:.3f}"
      )
    ax.set_xlabel("θ")
    ax.legend()
  ax = axes[3]
  sweep = results["sigma_sweep"]
  s = np.asarray([r["sigma"] for r in sweep])
  fine = np.linspace(0, s.max(), 30)
  ax.plot(
    fine,
    [
      exact_law(beta, float(v), c["quadrature_nodes"]).mass_above(results["barrier_top"])
      for v in fine
    ],
    label="exact exp(−βU_σ)",
  )
  ax.errorbar(
    s,
    [r["flat_mass_empirical"] for r in sweep],
    yerr=[2 * r["flat_mass_stderr"] for r in sweep],
    fmt="o",
    capsize=3,
    label="chains (± 2 s.e.)",
  )
  ax.set_xlabel("σ")
  ax.set_ylabel("P(θ > θ*)")
  ax.set_title("flat-basin mass")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


#: Chains per law rerun by the full ``--check``.
CHECK_CHAINS = 2_000


def check(
  recorded: dict[str, Any], *, quick: bool = False, progress: bool = True
) -> list[_report.Check]:
  """Recomputes the deterministic quantities of ``recorded`` (and reruns a few chains)."""
  del progress
  config = _report.config_from_json(Config, recorded["config"])
  threshold = barrier_top()
  checks = [_report.Check("barrier top θ*", recorded["barrier_top"], threshold, atol=1e-9)]
  exact = [
    exact_law(config.beta, row["sigma"], config.quadrature_nodes).mass_above(threshold)
    for row in recorded["sigma_sweep"]
  ]
  checks.append(
    _report.Check(
      "exact flat-basin masses of the σ sweep",
      [row["flat_mass_exact"] for row in recorded["sigma_sweep"]],
      exact,
      atol=1e-9,
    )
  )
  if quick:
    return checks
  for row in recorded["discretisation"]:
    grid, pi = discrete_chain_law(
      config.beta, row["sigma"], row["learning_rate"], config.kernel_grid
    )
    checks.append(
      _report.Check(
        f"discrete-chain flat mass, σ = {row['sigma']:g}, λ = {row['learning_rate']:g}",
        row["flat_mass_discrete"],
        float(pi[grid > threshold].sum()),
        atol=1e-9,
      )
    )
  for i, name in enumerate(("sgld", "fsgld")):
    row = recorded["main"][name]
    final = run_chains(row["sigma"], config, CHECK_CHAINS, config.learning_rate, config.seed + i)
    p = row["flat_mass_empirical"]
    se = math.sqrt(p * (1 - p) * (1 / CHECK_CHAINS + 1 / row["num_chains"]))
    checks.append(
      _report.Check(
        f"{name} flat-basin mass, {CHECK_CHAINS} rerun chains",
        p,
        float(np.mean(final[-1] > threshold)),
        atol=4 * se,
        statistical=True,
      )
    )
  return checks


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """``python -m benchmarks.stationary [--quick] [--check] [--out DIR] [--no-progress]``."""
  return _report.main(argv, sys.modules[__name__])


if __name__ == "__main__":
  main()
