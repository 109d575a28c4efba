"""The source of perturbations: the state that :func:`perturbed_value_and_grad` finds.

Every member of the family (:func:`~fsgld_optax.fsgld`, :func:`~fsgld_optax.fsghmc`,
:func:`~fsgld_optax.preconditioned_fsgld`, :func:`~fsgld_optax.rwp` in front of any optax
optimizer) starts with this one transformation. It leaves floating updates unchanged and
carries what the wrapper needs to perturb step ``k``: the step count, the run's key, σ_k and
which parameter leaves it sees. Exactly one source may sit in an optimizer, however nested.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fsgld_optax import _randomness, _validation


class FSGLDState(NamedTuple):
  """State of the source of perturbations, found by :func:`find_fsgld_state`.

  Attributes:
    count: ``int32[]``, the number of updates taken so far; the index ``k`` of the next step
      (it saturates at 2³¹ − 1, after which ``rng_key`` ratchets every step so that draws
      stay fresh).
    rng_key: typed PRNG key ``key<impl>[]``; step ``k`` derives its perturbations from
      ``(rng_key, k)``.
    sigma: ``float[]``, the perturbation scale σ_k of the next step.
    perturbed: ``bool[]`` per parameter leaf, like the parameters: ``True`` for the floating
      leaves this transformation sees. Under ``optax.masked`` or ``optax.partition`` the
      leaves it does not see are ``optax.MaskedNode``, and the wrapper leaves them alone.

  All fields are arrays (the key a typed key), so ``orbax.checkpoint``, ``pickle`` and
  ``flax.serialization`` save and restore the state; a run continued from a checkpoint
  equals the uninterrupted run bitwise.
  """

  count: jax.Array
  rng_key: jax.Array
  sigma: jax.Array
  perturbed: Any


def check_params(params: Any, name: str) -> None:
  """Rejects complex parameter leaves, naming the leaf."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    if jnp.issubdtype(jnp.result_type(leaf), jnp.complexfloating):
      raise ValueError(
        f"{name} does not support complex parameters: leaf params{jax.tree_util.keystr(path)} "
        f"has dtype {jnp.result_type(leaf)}. Split it into real and imaginary parts (two real "
        "leaves); the Langevin noise and the perturbations are defined per real coordinate."
      )


def check_updates(updates: Any, params: Any, name: str) -> None:
  """Raises a ``ValueError`` naming any leaf whose gradient shape differs from the parameter."""
  if params is None:
    return
  if jax.tree.structure(updates) != jax.tree.structure(params):
    raise ValueError(
      f"{name} update got updates and params with different tree structures:\n"
      f"  updates: {jax.tree.structure(updates)}\n  params:  {jax.tree.structure(params)}"
    )
  for (path, u), p in zip(
    jax.tree_util.tree_flatten_with_path(updates)[0], jax.tree.leaves(params), strict=True
  ):
    if np.shape(u) != np.shape(p):
      raise ValueError(
        f"{name} update: the gradient of params{jax.tree_util.keystr(path)} has shape "
        f"{np.shape(u)}, the parameter {np.shape(p)}."
      )


def zero_non_inexact(updates: Any, params: Any) -> Any:
  """Zero updates for the leaves the family never moves.

  With ``params``, a leaf moves iff both its parameter and its update are floating; the others
  (integer or boolean parameters, whose gradients are ``float0`` under
  ``jax.grad(..., allow_int=True)``) get zeros of the parameter's dtype. Without ``params``,
  integer, boolean and ``float0`` updates become zeros (``bool`` zeros for ``float0``, which
  add nothing to any dtype).
  """

  def zero(u: Any, p: Any = None) -> Any:
    if p is not None:
      return u if _randomness.is_inexact(u) and _randomness.is_inexact(p) else jnp.zeros_like(p)
    if _randomness.is_inexact(u):
      return u
    dtype = jnp.result_type(u)
    return jnp.zeros(np.shape(u), bool if dtype == jax.dtypes.float0 else dtype)

  if params is None:
    return jax.tree.map(zero, updates)
  return jax.tree.map(zero, updates, params)


def perturbation_source(
  sigma: optax.ScalarOrSchedule, *, key: int | jax.Array, name: str = "rwp"
) -> optax.GradientTransformationExtraArgs:
  """The source of perturbations with scale ``sigma`` (see :func:`~fsgld_optax.rwp`).

  Floating updates pass unchanged; ``float0`` and integer updates become zeros; a gradient
  whose shape differs from its parameter's raises. ``name`` is the public function that
  built it, for error messages.
  """
  rng_key = _randomness.canonical_key(key)

  def sigma_at(count: jax.Array) -> jax.Array:
    sigma_k = _validation.at(sigma, count)
    _validation.check_schedule_value(
      "sigma", sigma, sigma_k, lower=0.0, inclusive=True, allow_inf=False
    )
    return sigma_k

  def init_fn(params: optax.Params) -> FSGLDState:
    check_params(params, name)
    count = jnp.zeros([], jnp.int32)
    perturbed = jax.tree.map(lambda p: jnp.asarray(_randomness.is_inexact(p)), params)
    return FSGLDState(
      count=count,
      rng_key=_randomness.fresh_key(rng_key),
      sigma=sigma_at(count),
      perturbed=perturbed,
    )

  def update_fn(
    updates: optax.Updates,
    state: FSGLDState,
    params: optax.Params | None = None,
    **extra_args: Any,
  ) -> tuple[optax.Updates, FSGLDState]:
    del extra_args
    check_updates(updates, params, name)
    updates = zero_non_inexact(updates, params)
    count, rng_key = _randomness.next_step(state.count, state.rng_key)
    return updates, state._replace(count=count, rng_key=rng_key, sigma=sigma_at(count))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)  # pyright: ignore[reportArgumentType]


def rwp(
  sigma: optax.ScalarOrSchedule,
  *,
  key: int | jax.Array,
) -> optax.GradientTransformationExtraArgs:
  r"""Random weight perturbation (RWP) for any optax optimizer.

  A transformation that leaves the updates unchanged and carries the perturbation state
  (step count, key, σ_k). Chain it in front of any optimizer and take the gradient with
  :func:`~fsgld_optax.perturbed_value_and_grad`, which perturbs with this state's σ_k:

  .. math::

    g_k = \frac{1}{n} \sum_{i=1}^{n} \nabla U(\theta_k + \varepsilon_{k,i}),
    \quad \varepsilon_{k,i} \sim \mathcal{N}(0, \sigma_k^2 I),

  and the optimizer after it (AdamW, SGD with momentum, …) steps with :math:`g_k` instead
  of :math:`\nabla U(\theta_k)`: it minimises the smoothed loss
  :math:`U_\sigma = \mathbb{E}_\varepsilon U(\theta + \varepsilon) = U +
  \tfrac{\sigma^2}{2}\operatorname{tr}\nabla^2 U + O(\sigma^4)`.
  ``optax.chain(rwp(σ, key=0), optax.sgd(λ))`` is :func:`~fsgld_optax.fsgld` with
  ``beta=inf``. Every member of the family starts with this transformation, so an optimizer
  holds exactly one source of perturbations.

  Integer and boolean leaves are never perturbed and get zero updates; complex leaves are
  rejected at ``init`` (split them into real and imaginary parts); a gradient whose shape
  differs from its parameter's is an error naming the leaf, not a broadcast.

  Args:
    sigma: perturbation scale σ ≥ 0, a scalar or a schedule ``count -> σ_k``.
    key: int seed or typed ``jax.random.key``; the perturbations of the run derive from it.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is an :class:`FSGLDState`.

  Examples:
    >>> import jax.numpy as jnp, optax, fsgld_optax
    >>> loss_fn = lambda p, x: jnp.mean((x @ p) ** 2)
    >>> params = jnp.ones(3)
    >>> tx = optax.chain(fsgld_optax.rwp(sigma=0.01, key=0), optax.adamw(1e-3))
    >>> opt_state = tx.init(params)
    >>> grad_fn = fsgld_optax.perturbed_value_and_grad(loss_fn)
    >>> loss, grads = grad_fn(params, opt_state, jnp.eye(3))
    >>> updates, opt_state = tx.update(grads, opt_state, params)
    >>> print(fsgld_optax.find_fsgld_state(opt_state).count)
    1

  References:
    Bruno et al., *Flatness-Aware Stochastic Gradient Langevin Dynamics*, ICML 2026.
    https://arxiv.org/abs/2510.02174

    Li, Zhang, Wei, Yang and Huang, *Revisiting Random Weight Perturbation for Efficiently
    Improving Generalization*, TMLR 2024. https://arxiv.org/abs/2404.00357
  """
  _validation.check_scalar(
    "sigma", sigma, lower=0.0, inclusive=True, allow_inf=False, allow_schedule=True
  )
  return perturbation_source(sigma, key=key, name="rwp")


def find_fsgld_state(opt_state: optax.OptState) -> FSGLDState:
  """Returns the one source of perturbations (:class:`FSGLDState`) inside an optimizer state.

  Looks through ``optax.chain``, ``optax.inject_hyperparams``, ``optax.MultiSteps``,
  ``optax.masked``, ``optax.partition``, ``optax.apply_if_finite`` and any other pytree of
  states, whichever member of the family put it there (:func:`~fsgld_optax.fsgld`,
  :func:`~fsgld_optax.fsghmc`, :func:`~fsgld_optax.preconditioned_fsgld`,
  :func:`~fsgld_optax.rwp`, …).

  Args:
    opt_state: the state of an optimizer that contains one member of the family.

  Returns:
    The :class:`FSGLDState`.

  Raises:
    ValueError: if the state holds no :class:`FSGLDState`, or more than one.

  Examples:
    >>> import optax, jax.numpy as jnp, fsgld_optax
    >>> tx = optax.chain(optax.clip_by_global_norm(1.0), fsgld_optax.fsgld(0.1, 1e6, key=0))
    >>> state = fsgld_optax.find_fsgld_state(tx.init(jnp.zeros(3)))
    >>> print(int(state.count))
    0
  """
  is_state = lambda x: isinstance(x, FSGLDState)
  found = [
    (path, leaf)
    for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=is_state)[0]
    if is_state(leaf)
  ]
  if not found:
    raise ValueError(
      "No FSGLDState (source of perturbations) found in opt_state. Pass the state returned by "
      "tx.init of an optimizer built with fsgld_optax.fsgld, sgld, fsghmc, sghmc, "
      "preconditioned_fsgld, psgld, or with fsgld_optax.rwp chained in front of an optax "
      "optimizer (alone or inside optax.chain, inject_hyperparams, MultiSteps or masked)."
    )
  if len(found) > 1:
    paths = ", ".join(f"opt_state{jax.tree_util.keystr(path)}" for path, _ in found)
    raise ValueError(
      f"Found {len(found)} FSGLDStates (sources of perturbations) in opt_state (at {paths}); "
      "the perturbations must come from exactly one member of the fsgld_optax family."
    )
  return found[0][1]
