"""Random draws: their laws, their independence, the bit packing and the randomness contract.

Statistical checks use fixed keys and tolerances of five Monte-Carlo standard errors of the
statistic tested (each error is worked out where it is used), so they fail on a real defect
(a wrong variance, a repeated stream, a mis-unpacked bit) and not by chance.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _states import at_step
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from scipy import stats

import fsgld_optax
from fsgld_optax import _randomness

DISTRIBUTIONS = ("gaussian", "rademacher", "binomial")
CHEAP = ("rademacher", "binomial")  # (perturbation, langevin_noise) of the cheap mode
DEFAULT = ("gaussian", "gaussian")
BINOMIAL_VALUES = (2.0 * np.arange(9) - 8) / np.sqrt(8)
BINOMIAL_PMF = np.array([math.comb(8, k) for k in range(9)]) / 256


def even_moment(distribution: str, order: int) -> float:
  """E x^order of the standardised distribution."""
  if distribution == "gaussian":
    return float(np.prod(np.arange(order - 1, 0, -2)))  # (order − 1)!!
  if distribution == "rademacher":
    return 1.0
  return float(np.sum(BINOMIAL_PMF * BINOMIAL_VALUES**order))


def draw(distribution: str, shape, key: int = 0, dtype=jnp.float32) -> np.ndarray:
  tree = {"x": jnp.zeros(shape, dtype)}
  out = jax.jit(_randomness.standard_noise_like, static_argnums=2)(
    jax.random.key(key), tree, distribution
  )
  return np.asarray(out["x"], np.float64)


# --------------------------------------------------------------------------------------
# Laws
# --------------------------------------------------------------------------------------


# (1024, 512) takes the packed path (axis 1 divides by 32 and 4); (999, 523) has no axis that
# divides by 4, so each element gets a word of its own. About 1e6 draws in all.
@pytest.mark.parametrize("shape", [(1024, 512), (999, 523)])
@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_moments(distribution, shape):
  x = draw(distribution, shape).ravel()
  n = x.size
  m4, m8 = even_moment(distribution, 4), even_moment(distribution, 8)
  # Standard errors of the sample moments of n independent draws with E x = 0, E x² = 1:
  # mean √(1/n); mean of x² √((m4 − 1)/n); mean of x⁴ √((m8 − m4²)/n).
  assert abs(x.mean()) < 5 * math.sqrt(1 / n)
  assert abs(np.mean(x**2) - 1) <= 5 * math.sqrt((m4 - 1) / n)
  assert abs(np.mean(x**4) - m4) <= 5 * math.sqrt((m8 - m4**2) / n)
  if distribution == "gaussian":
    assert m4 == 3
  elif distribution == "rademacher":
    np.testing.assert_array_equal(np.abs(x), 1.0)  # variance and kurtosis exactly 1
  else:
    assert m4 == pytest.approx(2.75)


@pytest.mark.parametrize("distribution", CHEAP)
def test_cheap_laws_have_the_right_atoms_and_frequencies(distribution):
  x = draw(distribution, (1024, 512), key=1).ravel()
  values = np.array([-1.0, 1.0]) if distribution == "rademacher" else BINOMIAL_VALUES
  pmf = np.array([0.5, 0.5]) if distribution == "rademacher" else BINOMIAL_PMF
  index = np.abs(x[:, None] - values[None, :]).argmin(axis=1)
  np.testing.assert_allclose(x, values[index], rtol=1e-6)  # nothing outside the atoms
  counts = np.bincount(index, minlength=len(values))
  chi2 = np.sum((counts - x.size * pmf) ** 2 / (x.size * pmf))
  # Pearson's statistic, (atoms − 1) degrees of freedom; exceeded with probability 1e-6.
  assert chi2 < stats.chi2.ppf(1 - 1e-6, len(values) - 1)


def test_gaussian_draws_equal_jax_random_normal_bitwise():
  tree = {
    "f32": jnp.zeros((33, 7)),
    "bf16": jnp.zeros((4, 64), jnp.bfloat16),
    "f16": jnp.zeros((5,), jnp.float16),
    "scalar": jnp.zeros(()),
    "empty": jnp.zeros((0, 3)),
  }
  for key in (jax.random.key(3), jax.random.key(3, impl="rbg")):
    ours = jax.jit(_randomness.standard_noise_like, static_argnums=2)(key, tree, "gaussian")
    theirs = optax.tree.random_like(key, tree, jax.random.normal)
    for name in tree:
      assert ours[name].dtype == theirs[name].dtype
      np.testing.assert_array_equal(
        np.asarray(ours[name], np.float32), np.asarray(theirs[name], np.float32), err_msg=name
      )


@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 0, 2), (2, 3, 64), (300, 41)])
def test_random_bits_equal_jax_random_bits(shape):
  key = jax.random.key(11)
  np.testing.assert_array_equal(
    jax.jit(_randomness.random_bits, static_argnums=1)(key, shape),
    jax.random.bits(key, shape, jnp.uint32),
  )
  keys = jax.random.split(key, 3)  # batched keys, as for the n perturbations
  np.testing.assert_array_equal(
    jax.jit(jax.vmap(lambda k: _randomness.random_bits(k, shape)))(keys),
    jax.vmap(lambda k: jax.random.bits(k, shape, jnp.uint32))(keys),
  )


# --------------------------------------------------------------------------------------
# Bit packing
# --------------------------------------------------------------------------------------


def packed_bits_reference(key, shape, width):
  """Plain NumPy unpacking of the words of ``jax.random.bits``, one element at a time."""
  per_word, mask = 32 // width, (1 << width) - 1
  axes = [a for a, d in enumerate(shape) if d > 0 and d % per_word == 0]
  if not axes:
    return np.asarray(jax.random.bits(key, shape, jnp.uint32)) & mask
  axis = axes[-1]
  word_shape = (*shape[:axis], shape[axis] // per_word, *shape[axis + 1 :])
  words = np.asarray(jax.random.bits(key, word_shape, jnp.uint32))
  out = np.zeros(shape, np.uint32)
  for index in np.ndindex(*shape):
    word_index = (*index[:axis], index[axis] // per_word, *index[axis + 1 :])
    out[index] = (int(words[word_index]) >> (width * (index[axis] % per_word))) & mask
  return out


@pytest.mark.parametrize(
  ("width", "shape"),
  [
    (1, (64,)),
    (1, (3, 64)),
    (1, (64, 5)),
    (1, (2, 96, 3)),
    (1, (32, 33)),
    (1, (5, 7)),
    (1, ()),
    (1, (0,)),
    (1, (0, 32)),
    (8, (4,)),
    (8, (3, 8)),
    (8, (8, 3, 5)),
    (8, (5, 7)),
    (8, ()),
    (8, (4, 0)),
  ],
)
def test_packed_bits_unpack_exactly(width, shape):
  key = jax.random.key(5)
  bits = jax.jit(_randomness._packed_bits, static_argnums=(1, 2))(key, shape, width)
  assert bits.shape == shape and bits.dtype == jnp.uint32
  np.testing.assert_array_equal(bits, packed_bits_reference(key, shape, width))


@pytest.mark.parametrize("shape", [(4, 64), (3, 5)])
def test_cheap_values_from_bits(shape):
  key = jax.random.key(9)
  leaf = jnp.zeros(shape)
  one_bit = packed_bits_reference(key, shape, 1).astype(np.float64)
  np.testing.assert_array_equal(_randomness._rademacher(key, leaf), 2 * one_bit - 1)
  byte = packed_bits_reference(key, shape, 8).astype(np.uint8)
  ones = np.unpackbits(byte[..., None], axis=-1).sum(axis=-1)
  np.testing.assert_allclose(
    _randomness._binomial(key, leaf), (2.0 * ones - 8) / np.sqrt(8), rtol=1e-6
  )


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_dtypes_are_kept(distribution):
  tree = {
    "f32": jnp.zeros((8, 32)),
    "bf16": jnp.zeros((8, 32), jnp.bfloat16),
    "f16": jnp.zeros((3,), jnp.float16),
    "int": jnp.ones((4,), jnp.int32),
  }
  out = _randomness.standard_noise_like(jax.random.key(0), tree, distribution)
  for name, leaf in tree.items():
    assert out[name].dtype == leaf.dtype and out[name].shape == leaf.shape
  np.testing.assert_array_equal(out["int"], 0)
  for name in ("f32", "bf16", "f16"):
    x = np.asarray(out[name], np.float32)
    assert np.all(np.isfinite(x)) and np.unique(x).size > 1


# --------------------------------------------------------------------------------------
# No buffers beyond the draws' consumers (XLA's compiled memory statistics, not timings)
# --------------------------------------------------------------------------------------


def temp_bytes(fn, *args) -> int:
  return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize(("distribution", "limit"), [("gaussian", 0.01), ("rademacher", 0.05)])
def test_draws_fuse_into_their_consumer(distribution, limit):
  # jax.random.normal on CPU keeps Threefry's state in 4 buffers of the draw's size; the
  # inline hash fuses into the add (no buffer), and packed words take 1/32 of it (Rademacher).
  params = {"w": jnp.zeros((256, 512)), "b": jnp.zeros((300,))}
  nbytes = sum(x.nbytes for x in jax.tree.leaves(params))

  def perturb(key, params):
    noise = _randomness.standard_noise_like(key, params, distribution)
    return jax.tree.map(lambda p, e: p + 0.1 * e, params, noise)

  assert temp_bytes(perturb, jax.random.key(0), params) <= limit * nbytes
  reference = lambda key, params: jax.tree.map(
    lambda p, e: p + 0.1 * e, params, optax.tree.random_like(key, params, jax.random.normal)
  )
  assert temp_bytes(reference, jax.random.key(0), params) > nbytes  # what the fusion saves


@pytest.mark.parametrize("modes", [DEFAULT, CHEAP])
def test_fsgld_step_needs_one_parameter_copy_more_than_sgd(modes):
  params = {
    "w1": jnp.zeros((256, 512)),
    "b1": jnp.zeros((512,)),
    "w2": jnp.zeros((512, 256)),
    "b2": jnp.zeros((256,)),
  }
  x, y = jnp.ones((4, 256)), jnp.ones((4, 256))
  param_bytes = sum(p.nbytes for p in jax.tree.leaves(params))

  def loss(p, x, y):
    hidden = jnp.tanh(x @ p["w1"] + p["b1"][None, :])
    return jnp.mean((hidden @ p["w2"] + p["b2"][None, :] - y) ** 2)

  def step(tx, grad_fn):
    def fn(params, opt_state, x, y):
      value, grads = grad_fn(params, opt_state, x, y)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, value

    return fn

  sgd = optax.sgd(0.1)
  perturbation, langevin_noise = modes
  tx = fsgld_optax.fsgld(0.1, 1e8, key=0, langevin_noise=langevin_noise)
  grad_fn = fsgld_optax.perturbed_value_and_grad(loss, perturbation=perturbation)
  sgd_grad = lambda p, s, x, y: jax.value_and_grad(loss)(p, x, y)
  base = temp_bytes(step(sgd, sgd_grad), params, sgd.init(params), x, y)
  extra = temp_bytes(step(tx, grad_fn), params, tx.init(params), x, y) - base
  # The perturbed weights θ + σε are the one extra copy; ε and ξ are never materialised.
  assert extra <= 1.1 * param_bytes


# --------------------------------------------------------------------------------------
# Independence and the randomness contract, through the public API
# --------------------------------------------------------------------------------------


def zero_loss(params):
  """Zero loss whose aux is the (perturbed) parameters it was called with.

  Its gradient, 0 · θ, is zero but computed from θ, so it is sharded like θ.
  """
  squares = sum(jnp.sum(leaf.astype(jnp.float32) ** 2) for leaf in jax.tree.leaves(params))
  return 0.0 * squares / 2, params


def make_stepper(modes, n: int = 1, key: int = 0):
  """One fSGLD step that returns (ε, ξ, new state): σ = 1 and √(2λ/β) = 1 at θ = 0, with a
  zero gradient, make the perturbed weights equal ε and the update equal ξ, exactly."""
  perturbation, langevin_noise = modes
  tx = fsgld_optax.fsgld(0.5, 1.0, sigma=1.0, key=key, langevin_noise=langevin_noise)
  grad_fn = fsgld_optax.perturbed_value_and_grad(
    zero_loss, has_aux=True, n_perturbations=n, perturbation=perturbation
  )

  @jax.jit
  def step(params, opt_state):
    (_, eps), grads = grad_fn(params, opt_state)
    xi, opt_state = tx.update(grads, opt_state, params)
    return eps, xi, opt_state

  return tx, step


def run_steps(modes, params, steps: int, key: int = 0):
  tx, step = make_stepper(modes, key=key)
  opt_state, out = tx.init(params), []
  for _ in range(steps):
    eps, xi, opt_state = step(params, opt_state)
    out.append((eps, xi))
  return out


def correlation(a, b) -> float:
  a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
  return float(np.corrcoef(a, b)[0, 1])


def assert_uncorrelated(a, b):
  # Sample correlation of n independent pairs: mean 0, standard error 1/√n.
  assert not np.array_equal(np.asarray(a), np.asarray(b))
  assert abs(correlation(a, b)) < 5 / math.sqrt(np.size(a))


@pytest.mark.parametrize("modes", [DEFAULT, CHEAP])
def test_draws_are_independent_across_streams_steps_and_leaves(modes):
  params = {"a": jnp.zeros((256, 256)), "b": jnp.zeros((256, 256))}
  (eps0, xi0), (eps1, xi1) = run_steps(modes, params, steps=2)
  for name in params:
    assert_uncorrelated(eps0[name], xi0[name])  # ε and ξ of one step
    assert_uncorrelated(eps0[name], eps1[name])  # consecutive steps
    assert_uncorrelated(xi0[name], xi1[name])
    assert_uncorrelated(eps0[name], xi1[name])
  assert_uncorrelated(eps0["a"], eps0["b"])  # leaves
  assert_uncorrelated(xi0["a"], xi0["b"])


@pytest.mark.parametrize("perturbation", ["gaussian", "rademacher"])
def test_the_n_perturbations_are_independent_and_reproducible(perturbation):
  n, params = 4, {"w": jnp.zeros((128, 256))}
  tx, step = make_stepper((perturbation, "gaussian"), n=n)
  opt_state = tx.init(params)
  eps_mean, _, _ = step(params, opt_state)
  key = _randomness.perturbation_key(
    fsgld_optax.find_fsgld_state(opt_state).rng_key, fsgld_optax.find_fsgld_state(opt_state).count
  )
  eps = [
    _randomness.standard_noise_like(k, params, perturbation)["w"] for k in jax.random.split(key, n)
  ]
  np.testing.assert_allclose(eps_mean["w"], np.mean(eps, axis=0), rtol=1e-6, atol=1e-7)
  for i in range(n):
    for j in range(i):
      assert_uncorrelated(eps[i], eps[j])


@pytest.mark.parametrize(("antithetic", "size"), [(False, 1), (False, 2), (True, 1)])
def test_perturbation_groups_draw_the_same_perturbations(antithetic, size):
  n = 4
  params = {"w": jnp.zeros((8, 64)), "v": jnp.zeros((3, 5))}

  def cubes(p):  # gradient (θ + ε)² = ε² at θ = 0, σ = 1; aux θ + ε = ε
    return sum(jnp.sum(leaf**3) for leaf in jax.tree.leaves(p)) / 3, p

  tx = fsgld_optax.fsgld(0.5, 1.0, sigma=1.0, key=6)
  opt_state = tx.init(params)
  key = _randomness.perturbation_key(
    fsgld_optax.find_fsgld_state(opt_state).rng_key, fsgld_optax.find_fsgld_state(opt_state).count
  )
  eps = [
    _randomness.standard_noise_like(k, params, "gaussian")
    for k in jax.random.split(key, n // 2 if antithetic else n)
  ]
  if antithetic:
    eps += [jax.tree.map(jnp.negative, e) for e in eps]
  expected = (
    jax.tree.map(lambda *e: np.mean(e, axis=0), *eps),
    jax.tree.map(lambda *e: np.mean(np.square(e), axis=0), *eps),
  )
  for group in (None, size):
    grad_fn = fsgld_optax.perturbed_value_and_grad(
      cubes, has_aux=True, n_perturbations=n, antithetic=antithetic, perturbation_batch_size=group
    )
    (_, mean_eps), mean_sq = jax.jit(grad_fn)(params, opt_state)
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
      (mean_eps, mean_sq),
      expected,
    )


@pytest.mark.parametrize("modes", [DEFAULT, CHEAP])
def test_same_key_same_draws_and_steps_differ(modes):
  params = {"w": jnp.zeros((16, 64)), "b": jnp.zeros((5,), jnp.bfloat16)}
  first = run_steps(modes, params, steps=3, key=7)
  again = run_steps(modes, params, steps=3, key=7)
  other = run_steps(modes, params, steps=3, key=8)
  for (e, x), (e2, x2), (e3, x3) in zip(first, again, other, strict=True):
    jax.tree.map(np.testing.assert_array_equal, (e, x), (e2, x2))
    for name in params:
      assert not np.array_equal(e[name], e3[name]) and not np.array_equal(x[name], x3[name])
  for name in params:
    drawn = [np.asarray(d[name], np.float32) for step in first for d in step]
    assert len({d.tobytes() for d in drawn}) == len(drawn)  # no draw repeats


@pytest.mark.parametrize("modes", [DEFAULT, CHEAP])
def test_draws_are_reproducible_from_the_state(modes):
  perturbation, langevin_noise = modes
  params = {"w": jnp.zeros((8, 64)), "v": jnp.zeros((3, 5), jnp.bfloat16)}
  tx, step = make_stepper(modes, key=4)
  opt_state = tx.init(params)
  for _ in range(2):
    eps, xi, new_state = step(params, opt_state)
    key = _randomness.perturbation_key(
      fsgld_optax.find_fsgld_state(opt_state).rng_key, fsgld_optax.find_fsgld_state(opt_state).count
    )
    expected_eps = _randomness.standard_noise_like(
      jax.random.split(key, 1)[0], params, perturbation
    )
    key = _randomness.langevin_key(
      fsgld_optax.find_fsgld_state(opt_state).rng_key, fsgld_optax.find_fsgld_state(opt_state).count
    )
    expected_xi = _randomness.standard_noise_like(key, params, langevin_noise)
    jax.tree.map(np.testing.assert_array_equal, (eps, xi), (expected_eps, expected_xi))
    opt_state = new_state


@pytest.mark.parametrize("modes", [DEFAULT, CHEAP])
def test_eight_devices_draw_what_one_device_draws(modes):
  mesh = Mesh(np.array(jax.devices()[:8]), ("x",))
  params = {
    "w": jnp.zeros((16, 256)),  # sharded along the packing axis, one word column per device
    "v": jnp.zeros((64, 24)),  # sharded along axis 0, packed along axis 1 (binomial) or 0
    "u": jnp.zeros((4, 64)),  # 8 elements per device along the packing axis: words split
    "b": jnp.zeros((8, 3)),  # no packing axis: a word per element
    "h": jnp.zeros((8, 32), jnp.bfloat16),
  }
  specs = {"w": P(None, "x"), "v": P("x", None), "u": P(None, "x"), "b": P("x"), "h": P("x")}
  sharded = {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in params.items()}
  tx, step = make_stepper(modes, key=12)
  state = at_step(tx.init(params), 1)  # step 1, not only step 0
  one = step(jax.device_put(params, jax.devices()[0]), jax.device_put(state, jax.devices()[0]))
  replicated_state = jax.device_put(state, NamedSharding(mesh, P()))
  compiled = step.lower(sharded, replicated_state).compile()
  many = compiled(sharded, replicated_state)
  jax.tree.map(np.testing.assert_array_equal, one[:2], many[:2])
  for draws in many[:2]:  # ε and ξ come out sharded like θ ...
    for name in ("w", "v", "b", "h"):
      assert draws[name].sharding.is_equivalent_to(sharded[name].sharding, draws[name].ndim)
  hlo = compiled.as_text()  # ... and each device draws its own shard, with no communication
  assert not any(op in hlo for op in ("all-gather", "all-reduce", "all-to-all", "collective"))


# --------------------------------------------------------------------------------------
# Stationary law with binomial Langevin noise
# --------------------------------------------------------------------------------------

# fSGLD on U(θ) = θ⁴/4 is SGLD on U_σ(θ) = E U(θ + σε) = θ⁴/4 + 3σ²θ²/2 + const for Gaussian
# and Rademacher ε alike (E ε = E ε³ = 0, E ε² = 1), so its law is ∝ exp(−β U_σ) up to O(λ)
# biases (discretisation and gradient noise; at this λ they move E θ² by less than its
# Monte-Carlo standard error of 0.7%). The cheap mode runs here, Rademacher ε with binomial ξ.
# Each of 512 chains is a 64-vector of independent coordinates (drawn on the packed path),
# started from the wrong law exp(−β U); the law contracts at rate ≥ min U_σ'' = 3σ² per unit
# time, so after 3,000 steps of λ = 2e-3 its distance to exp(−β U_σ) has shrunk by e^{−6.5}.
# The final states are 32,768 independent draws.
BETA, SIGMA, LR, STEPS = 1.0, 0.6, 2e-3, 3000
CHAINS, COORDS = 512, 64
EDGES = np.linspace(-2.0, 2.0, 17)


def smoothed(theta):
  return theta**4 / 4 + 1.5 * SIGMA**2 * theta**2


def unsmoothed(theta):
  return theta**4 / 4


def gibbs_cdf(potential):
  """The CDF of ∝ exp(−β potential), by the trapezoid rule on a fine grid."""
  grid = np.linspace(-6.0, 6.0, 120_001)
  density = np.exp(-BETA * potential(grid))
  cdf = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(grid))])
  return lambda x: np.interp(x, grid, cdf / cdf[-1])


def gibbs_draws(potential, shape, seed: int) -> np.ndarray:
  """Inverse-CDF draws from ∝ exp(−β potential)."""
  grid = np.linspace(-6.0, 6.0, 120_001)
  uniform = np.random.default_rng(seed).uniform(size=shape)
  return np.interp(uniform, gibbs_cdf(potential)(grid), grid)


def cheap_mode_chains() -> np.ndarray:
  grad_fn = fsgld_optax.perturbed_value_and_grad(
    lambda theta: jnp.sum(theta**4) / 4, perturbation="rademacher"
  )

  def chain(key, theta):
    tx = fsgld_optax.fsgld(LR, BETA, sigma=SIGMA, key=key, langevin_noise="binomial")

    def step(carry, _):
      theta, opt_state = carry
      _, grad = grad_fn(theta, opt_state)
      updates, opt_state = tx.update(grad, opt_state, theta)
      return (theta + updates, opt_state), None

    return jax.lax.scan(step, (theta, tx.init(theta)), length=STEPS)[0][0]

  keys = jax.random.split(jax.random.key(2027), CHAINS)
  start = jnp.asarray(gibbs_draws(unsmoothed, (CHAINS, COORDS), seed=0), jnp.float32)
  return np.asarray(jax.jit(jax.vmap(chain))(keys, start), np.float64).ravel()


def test_binomial_noise_samples_the_smoothed_gibbs_law():
  samples = cheap_mode_chains()
  n = samples.size

  def chi2(potential):
    probs = np.diff(gibbs_cdf(potential)(EDGES))
    probs = np.concatenate([probs, [1 - probs.sum()]])  # the two tails together
    counts, _ = np.histogram(samples, EDGES)
    counts = np.concatenate([counts, [n - counts.sum()]])
    return np.sum((counts - n * probs) ** 2 / (n * probs))

  def ks(potential):
    x = np.sort(samples)
    cdf = gibbs_cdf(potential)(x)
    return max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))

  # Pearson's statistic over 17 cells (16 degrees of freedom) and the Kolmogorov-Smirnov
  # distance of n independent draws, each at a 1e-4 false-alarm rate; exp(−β U) is far off.
  limit = stats.chi2.ppf(1 - 1e-4, len(EDGES) - 1)
  assert chi2(smoothed) < limit
  assert chi2(unsmoothed) > 20 * limit
  ks_limit = stats.kstwo.ppf(1 - 1e-4, n)
  assert ks(smoothed) < ks_limit
  assert ks(unsmoothed) > 5 * ks_limit
