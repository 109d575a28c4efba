"""Temporary memory of ``perturbed_value_and_grad`` does not grow with n.

With ``perturbation_batch_size=k`` the n perturbations run k at a time, one group after
another, with running sums: the compiled step's temporary memory (XLA's
``memory_analysis().temp_size_in_bytes``, read after compiling, nothing is run) is that of k
perturbations whatever n is. Compile-only, so the check is fast and deterministic.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fsgld_optax

SIZES = (64, 512, 512, 10)  # a 2-hidden-layer MLP: 0.3M parameters, 1.2 MB in float32
BATCH = 64


def mlp_params() -> list[dict[str, jax.Array]]:
  keys = jax.random.split(jax.random.key(0), len(SIZES) - 1)
  return [
    {"w": jax.random.normal(k, (m, d)) / np.sqrt(m), "b": jnp.zeros(d)}
    for k, m, d in zip(keys, SIZES[:-1], SIZES[1:], strict=True)
  ]


def mlp_loss(params: list[dict[str, jax.Array]], x: jax.Array, y: jax.Array) -> jax.Array:
  for layer in params[:-1]:
    x = jax.nn.relu(x @ layer["w"] + layer["b"][None])
  logits = x @ params[-1]["w"] + params[-1]["b"][None]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def param_bytes() -> int:
  return sum(leaf.nbytes for leaf in jax.tree.leaves(mlp_params()))


@functools.cache
def temp_bytes(n: int, group: int | None) -> int:
  """Temporary bytes of one compiled fSGLD step (gradient, update, apply) at n perturbations."""
  tx = fsgld_optax.fsgld(0.1, 1e4, key=0)
  grad_fn = fsgld_optax.perturbed_value_and_grad(
    mlp_loss, n_perturbations=n, split_batch=True, perturbation_batch_size=group
  )

  def step(params, opt_state, x, y):
    loss, grads = grad_fn(params, opt_state, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  params = mlp_params()
  x = jax.ShapeDtypeStruct((BATCH, SIZES[0]), jnp.float32)
  y = jax.ShapeDtypeStruct((BATCH,), jnp.int32)
  compiled = jax.jit(step).lower(params, tx.init(params), x, y).compile()
  analysis = compiled.memory_analysis()
  if analysis is None:
    pytest.skip("this backend reports no memory analysis")
  return int(analysis.temp_size_in_bytes)


def test_one_at_a_time_memory_does_not_grow_with_n():
  """n = 8 one at a time needs at most 2x the parameter bytes more than n = 1.

  One group's perturbed weights and gradient plus the running sum of gradients are about 3x
  the parameters at most, whatever n is; n = 1 already holds some of that. Measured on CPU
  (jax 0.10.2): +1.0x at n = 2 and +1.7x at n = 4 and 8 (+6.7x at n = 8 when the groups
  were written out one after another in the program, which XLA fused into one sum over
  every group's gradient).
  """
  extra = (temp_bytes(8, 1) - temp_bytes(1, None)) / param_bytes()
  assert extra <= 2.0, extra


def test_vectorised_memory_grows_with_n():
  """All n at once holds n perturbed copies: the measurement above can see growth in n."""
  extra = (temp_bytes(8, None) - temp_bytes(1, None)) / param_bytes()
  assert extra >= 4.0, extra
