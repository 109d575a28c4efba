"""The perturbed-gradient wrapper: the mean loss and gradient at n random weight perturbations."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from fsgld_optax import _randomness
from fsgld_optax._fsgld import FSGLDState
from fsgld_optax._randomness import PerturbationDistribution


def find_fsgld_state(opt_state: optax.OptState) -> FSGLDState:
  """Returns the one :class:`FSGLDState` inside an optimizer state, however nested.

  Looks through ``optax.chain``, ``optax.inject_hyperparams``, ``optax.MultiSteps``,
  ``optax.masked``, ``optax.apply_if_finite`` and any other pytree of states.

  Args:
    opt_state: an optimizer state built by a transformation that contains :func:`fsgld`.

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
      "No FSGLDState found in opt_state. Pass the state returned by tx.init of an optimizer "
      "built with fsgld_optax.fsgld or fsgld_optax.sgld (alone or inside optax.chain, "
      "inject_hyperparams, MultiSteps or masked)."
    )
  if len(found) > 1:
    paths = ", ".join(f"opt_state{jax.tree_util.keystr(path)}" for path, _ in found)
    raise ValueError(
      f"Found {len(found)} FSGLDStates in opt_state (at {paths}); the perturbations must come "
      "from exactly one fsgld transformation."
    )
  return found[0][1]


def _batch_argnums(batch_argnums: int | Sequence[int] | None, num_args: int) -> tuple[int, ...]:
  if batch_argnums is None:
    return tuple(range(num_args))
  argnums = (batch_argnums,) if isinstance(batch_argnums, int) else tuple(batch_argnums)
  for i in argnums:
    if not -num_args <= i < num_args:
      raise ValueError(
        f"batch_argnums={batch_argnums!r} names argument {i}, but the function got "
        f"{num_args} arguments after (params, opt_state)."
      )
  return tuple(sorted({i % num_args for i in argnums}))


def _split_leading(x: Any, n: int, argnum: int) -> jax.Array:
  x = jnp.asarray(x)
  if x.ndim == 0 or x.shape[0] % n:
    raise ValueError(
      f"split_batch=True with n_perturbations={n} needs every batched argument to have a "
      f"leading batch axis divisible by {n}; argument {argnum} has a leaf of shape {x.shape}."
    )
  return x.reshape((n, x.shape[0] // n, *x.shape[1:]))


def _as_varying(tree: Any, axis_name: str | tuple[str, ...]) -> Any:
  """Marks the floating leaves of ``tree`` as varying over ``axis_name``.

  Under ``jax.shard_map`` (with its default ``check_vma=True``) the gradient of a loss that
  varies over the axis with respect to a replicated (invariant) input is already summed over
  the axis; differentiating at varying parameters keeps it per device, so the ``pmean`` that
  follows averages it. Leaves that already vary, and everything under ``pmap`` or
  ``check_vma=False``, are left as they are.
  """
  axes = axis_name if isinstance(axis_name, tuple) else (axis_name,)

  def cast(x: jax.Array) -> jax.Array:
    aval = jax.typeof(x)
    mat = getattr(aval, "mat", None)
    varying = getattr(mat, "varying", None) if mat is not None else getattr(aval, "vma", None)
    missing = tuple(a for a in axes if a not in (varying or ()))
    return jax.lax.pcast(x, missing, to="varying") if missing else x

  return jax.tree.map(lambda x: cast(x) if _randomness.is_inexact(x) else x, tree)


def _mean_over_perturbations(tree: Any) -> Any:
  """Averages floating leaves over the leading axis; other leaves keep the first entry."""
  return jax.tree.map(
    lambda x: jnp.mean(x, axis=0) if _randomness.is_inexact(x) else x[0],
    tree,
  )


def _in_groups(
  fn: Callable[..., Any],
  noise: Any,
  args: Sequence[Any],
  axes: Sequence[int | None],
  n: int,
  size: int,
) -> Any:
  """``jax.vmap(fn)`` over the leading axis of ``noise`` (length n), ``size`` entries at a time.

  The n / size groups are written out one after another (a Python loop, not ``lax.map``: on
  CPU, convolutions inside an XLA loop body run many times slower). Outputs are stacked along
  a leading axis of length n, like ``jax.vmap``'s; leaves that are not floating (``float0``
  gradients of integer parameters) come from the first group only, which is all that
  :func:`_mean_over_perturbations` reads of them.
  """
  groups = []
  for start in range(0, n, size):
    take = lambda x, start=start: x[start : start + size]
    group_noise = jax.tree.map(take, noise)
    group_args = [
      a if ax is None else jax.tree.map(take, a) for a, ax in zip(args, axes, strict=True)
    ]
    if size == 1:
      squeeze = lambda x: x[0]
      out = fn(
        jax.tree.map(squeeze, group_noise),
        *[
          a if ax is None else jax.tree.map(squeeze, a)
          for a, ax in zip(group_args, axes, strict=True)
        ],
      )
      groups.append(jax.tree.map(lambda x: x[None], out))
    else:
      groups.append(jax.vmap(fn, in_axes=(0, *axes), axis_size=size)(group_noise, *group_args))
  return jax.tree.map(
    lambda *xs: jnp.concatenate(xs) if _randomness.is_inexact(xs[0]) else xs[0], *groups
  )


def perturbed_value_and_grad(
  fun: Callable[..., Any],
  *,
  n_perturbations: int = 1,
  has_aux: bool = False,
  split_batch: bool = False,
  antithetic: bool = False,
  axis_name: str | None = None,
  per_device_perturbations: bool = False,
  perturbation: PerturbationDistribution = "gaussian",
  batch_argnums: int | Sequence[int] | None = None,
  perturbation_batch_size: int | None = None,
) -> Callable[..., Any]:
  r"""Wraps a loss so that it returns the mean value and gradient at perturbed weights.

  For the step ``k`` held in the optimizer state, with σ_k from the same state,

  .. math::

    \bar U = \frac{1}{n} \sum_{i=1}^{n} U(\theta + \varepsilon_i; b_i), \qquad
    \bar g = \frac{1}{n} \sum_{i=1}^{n} \nabla U(\theta + \varepsilon_i; b_i), \qquad
    \varepsilon_i \sim \mathcal{N}(0, \sigma_k^2 I),

  where :math:`b_i` is the whole batch, or its ``i``-th ``1/n`` slice with
  ``split_batch=True`` (then n perturbations cost one full-batch gradient). Pass
  :math:`\bar g` to ``tx.update``: the transformation found in ``opt_state`` draws the
  Langevin noise of the same step. The n perturbations are evaluated with ``jax.vmap``,
  all at once or ``perturbation_batch_size`` at a time.

  Args:
    fun: the loss, ``fun(params, *args, **kwargs) -> value`` (or ``(value, aux)`` with
      ``has_aux``); ``value`` is a scalar. Integer and boolean leaves of ``params`` are
      passed through unperturbed and get ``float0`` gradients (as with
      ``jax.grad(..., allow_int=True)``), which ``fsgld``'s ``update`` turns into zero updates.
    n_perturbations: the number n ≥ 1 of perturbations averaged per step (the paper's runs
      use 1).
    has_aux: whether ``fun`` returns ``(value, aux)``. Floating leaves of ``aux`` are
      averaged over the n perturbations (so BatchNorm statistics come out as the mean of the
      n batch statistics); other leaves (integers, booleans) are taken from the first.
    split_batch: give perturbation ``i`` the ``i``-th contiguous ``1/n`` slice, along the
      leading axis, of every leaf of the batched arguments; the batch size must divide by n.
    antithetic: use ±ε pairs (n even): perturbation ``i < n/2`` is ``+ε_i`` and
      perturbation ``i + n/2`` is ``−ε_i``. Their mean cancels the odd-order terms of the
      Taylor expansion around θ, so the gradient noise due to ε is lower.
    axis_name: inside ``shard_map``/``pmap``, the mapped axis to average the value and the
      gradient over (``lax.pmean``). ``aux`` is returned per device.
    per_device_perturbations: with ``axis_name``, fold the axis index into the key so that
      each device draws its own ε (n × devices perturbations per step); by default every
      device uses the same ε.
    perturbation: ``"gaussian"`` (the paper) or ``"rademacher"``: ±σ with equal
      probability, from one random bit per parameter. Both have mean 0 and covariance
      σ² I, so both smooth the loss by :math:`\tfrac{\sigma^2}{2}\operatorname{tr}\nabla^2 U`
      to second order; at fourth order the Gaussian adds
      :math:`\tfrac{\sigma^4}{8}\sum_{ij}\partial_i^2\partial_j^2 U` and Rademacher the same
      sum with its diagonal terms :math:`i = j` divided by 3 (its fourth moment is 1, not 3).
      The stationary laws differ accordingly: on :math:`U = \theta^6/6` the smoothing adds
      :math:`\tfrac{15}{2}\sigma^4\theta^2` (Gaussian) or :math:`\tfrac{5}{2}\sigma^4\theta^2`
      (Rademacher) besides the common :math:`\tfrac{5}{2}\sigma^2\theta^4`.
    batch_argnums: which positional arguments after ``(params, opt_state)`` are batched, for
      ``split_batch``; by default all of them. Keyword arguments are never split.
    perturbation_batch_size: how many of the n perturbations to evaluate at once (vectorised
      with ``jax.vmap``); the n / ``perturbation_batch_size`` groups then run one after
      another, written out in the traced program. ``None`` (default): all n at once. Smaller
      groups keep fewer perturbed copies of the weights and their activations alive. On CPU,
      a convolution vectorised over n weight tensors becomes a grouped convolution that XLA
      runs many times slower than n plain ones (a ResNet-18 step with n = 8 and
      ``split_batch`` takes about 5 SGD steps vectorised, about 1 with ``1``), so use ``1``
      for convolutional networks there. Must divide n. The draws ε_i are the same for every
      value.

  Returns:
    ``f(params, opt_state, *args, **kwargs) -> (value, grads)`` or
    ``((value, aux), grads)`` with ``has_aux``, like ``jax.value_and_grad``.

  Raises:
    ValueError: for n < 1, an odd n with ``antithetic``, an unknown ``perturbation``,
      ``per_device_perturbations`` without ``axis_name``, a ``perturbation_batch_size`` that
      does not divide n; when called, for an ``opt_state`` with no or several
      :class:`FSGLDState`, or a batch that ``split_batch`` cannot divide.

  Examples:
    >>> import jax, jax.numpy as jnp, optax, fsgld_optax
    >>> def loss_fn(params, x, y):
    ...   return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)
    >>> params = {"w": jnp.zeros(2), "b": jnp.zeros(())}
    >>> tx = fsgld_optax.fsgld(learning_rate=0.1, beta=float("inf"), sigma=0.0, key=0)
    >>> opt_state = tx.init(params)
    >>> grad_fn = fsgld_optax.perturbed_value_and_grad(
    ...     loss_fn, n_perturbations=4, split_batch=True)
    >>> x, y = jnp.ones((8, 2)), jnp.ones(8)
    >>> loss, grads = jax.jit(grad_fn)(params, opt_state, x, y)
    >>> print(loss, grads["b"])
    1.0 -2.0

  References:
    Bruno et al., *Flatness-Aware Stochastic Gradient Langevin Dynamics*, ICML 2026.
    https://arxiv.org/abs/2510.02174
  """
  if (
    isinstance(n_perturbations, bool) or not isinstance(n_perturbations, int) or n_perturbations < 1
  ):
    raise ValueError(f"n_perturbations must be an int >= 1, got {n_perturbations!r}.")
  if antithetic and n_perturbations % 2:
    raise ValueError(
      f"antithetic=True pairs +ε with −ε, so n_perturbations must be even, got {n_perturbations}."
    )
  if per_device_perturbations and axis_name is None:
    raise ValueError("per_device_perturbations=True needs axis_name.")
  if perturbation_batch_size is not None and (
    isinstance(perturbation_batch_size, bool)
    or not isinstance(perturbation_batch_size, int)
    or perturbation_batch_size < 1
    or n_perturbations % perturbation_batch_size
  ):
    raise ValueError(
      "perturbation_batch_size must be None or an int >= 1 that divides n_perturbations="
      f"{n_perturbations}, got {perturbation_batch_size!r}."
    )
  _randomness.check_distribution("perturbation", perturbation, PerturbationDistribution)
  n = n_perturbations
  # Integer and boolean leaves of params are skipped: never perturbed, float0 gradients.
  value_and_grad = jax.value_and_grad(fun, has_aux=has_aux, allow_int=True)

  def draw(key: jax.Array, params: Any) -> Any:
    return _randomness.standard_noise_like(key, params, perturbation)

  def wrapped(params: Any, opt_state: optax.OptState, *args: Any, **kwargs: Any) -> Any:
    state = find_fsgld_state(opt_state)
    if axis_name is not None:
      params = _as_varying(params, axis_name)
    key = _randomness.perturbation_key(state.rng_key, state.count)
    if per_device_perturbations:
      key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    sigma = state.sigma

    def perturb(p: jax.Array, e: jax.Array) -> jax.Array:
      # One buffer for θ + σε, so the draw is never recomputed inside the consumers that
      # broadcast a parameter over activations (see _randomness.materialize).
      if not _randomness.is_inexact(p):
        return p
      return _randomness.materialize((p + sigma * e).astype(p.dtype))

    def value_and_grad_at(noise: Any, *args: Any) -> Any:
      return value_and_grad(jax.tree.map(perturb, params, noise), *args, **kwargs)

    if n == 1:
      out = value_and_grad_at(draw(jax.random.split(key, 1)[0], params), *args)
    else:
      keys = jax.random.split(key, n // 2 if antithetic else n)
      noise = jax.vmap(draw, in_axes=(0, None))(keys, params)
      if antithetic:
        noise = jax.tree.map(
          lambda e: jnp.concatenate([e, -e if _randomness.is_inexact(e) else e]), noise
        )
      args_list: list[Any] = list(args)
      args_axes: list[int | None] = [None] * len(args)
      if split_batch:
        for i in _batch_argnums(batch_argnums, len(args)):
          args_list[i] = jax.tree.map(lambda x, i=i: _split_leading(x, n, i), args[i])
          args_axes[i] = 0
      if perturbation_batch_size is None or perturbation_batch_size == n:
        batched = jax.vmap(value_and_grad_at, in_axes=(0, *args_axes), axis_size=n)(
          noise, *args_list
        )
      else:
        batched = _in_groups(
          value_and_grad_at, noise, args_list, args_axes, n, perturbation_batch_size
        )
      out = _mean_over_perturbations(batched)
    if axis_name is not None:
      (value, aux), grads = out if has_aux else ((out[0], None), out[1])
      value = jax.lax.pmean(value, axis_name)
      grads = jax.tree.map(
        lambda g: jax.lax.pmean(g, axis_name) if _randomness.is_inexact(g) else g, grads
      )
      out = ((value, aux), grads) if has_aux else (value, grads)
    return out

  return wrapped
