"""The perturbed-gradient wrapper: the mean loss and gradient at n random weight perturbations."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from fsgld_optax import _randomness, _validation
from fsgld_optax._randomness import PerturbationDistribution
from fsgld_optax._source import find_fsgld_state

PerturbationScale = Literal["isotropic", "filter", "element"]
AuxReduction = Literal["mean", "concat", "stack"]


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


def _split_leading(x: Any, num_groups: int, size: int, argnum: int) -> jax.Array:
  """``x`` with its leading axis split into ``(num_groups, size, rest)``, in row-major order.

  On a mesh with explicit axes (``jax.sharding.AxisType.Explicit``), a leading axis sharded
  over mesh axes ``A`` stays sharded over ``A`` in the slice axis (``rest``) when they divide
  it, so that each perturbation's slice spreads over the devices that held the batch; otherwise
  the slices are replicated. The new leading axes are never sharded: the groups are taken one
  at a time and vectorised over, which sharded axes would not allow. (Under ``Auto`` axes and
  outside a mesh, the compiler chooses the layout.)
  """
  x = jnp.asarray(x)
  n = num_groups * size
  if x.ndim == 0 or x.shape[0] % n:
    raise ValueError(
      f"split_batch=True with n_perturbations={n} needs every batched argument to have a "
      f"leading batch axis divisible by {n}; argument {argnum} has a leaf of shape {x.shape}."
    )
  shape = (num_groups, size, x.shape[0] // n, *x.shape[1:])
  sharding = jax.typeof(x).sharding
  spec = tuple(sharding.spec) + (None,) * (x.ndim - len(sharding.spec))
  if not spec or spec[0] is None:
    return x.reshape(shape)
  lead = spec[0] if isinstance(spec[0], tuple) else (spec[0],)
  devices = int(np.prod([sharding.mesh.shape[a] for a in lead]))
  slice_spec = spec[0] if shape[2] % devices == 0 else None
  return jnp.reshape(x, shape, out_sharding=P(None, None, slice_spec, *spec[1:]))


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


def _seen_leaves(perturbed: Any, params: Any) -> Any:
  """Python bools like ``params``: the leaves the source of perturbations sees.

  ``perturbed`` (from the source's state) mirrors the parameters the source was initialised
  with; under ``optax.masked``/``optax.partition`` the leaves it does not handle are
  ``optax.MaskedNode`` (possibly for a whole subtree).
  """
  is_masked = lambda x: isinstance(x, optax.MaskedNode)

  def seen(marker: Any, sub: Any) -> Any:
    # One leaf under a node is the same parameter (an nnx.Variable around its value).
    if not is_masked(marker) and len(jax.tree.leaves(sub)) > 1:
      raise ValueError(f"a subtree {jax.tree.structure(sub)} where the state has a leaf")
    return jax.tree.map(lambda _: not is_masked(marker), sub)

  try:
    return jax.tree.map(seen, perturbed, params, is_leaf=is_masked)
  except ValueError as error:
    raise ValueError(
      "params do not match the parameters the optimizer state was initialised with "
      f"(tx.init(params)): {error}"
    ) from error


def _scale(p: jax.Array, sigma: jax.Array, how: str) -> jax.Array:
  """σ, σ‖w_f‖ per output filter (last axis), or σ|w|; the weights' part is not differentiated."""
  if how == "isotropic":
    return sigma
  w = jax.lax.stop_gradient(p).astype(jnp.result_type(float, p.dtype))
  if how == "element":
    return sigma * jnp.abs(w)
  if w.ndim <= 1:
    return sigma * jnp.sqrt(jnp.sum(w * w))
  return sigma * jnp.sqrt(jnp.sum(w * w, axis=tuple(range(w.ndim - 1)), keepdims=True))


def _reductions(aux: Any, how: Any, split: bool, n: int) -> Any:
  """Per-leaf reductions ("mean" | "concat" | "stack") for ``aux`` from ``aux_reduction``."""
  is_spec = lambda x: x is None or isinstance(x, str)

  def expand(spec: Any, sub: Any) -> Any:
    def leaf(path: Any, x: Any) -> str:
      if spec is not None:
        return spec
      if split and n > 1 and np.ndim(x) > 0:
        raise ValueError(
          f"With split_batch=True each perturbation sees its own slice of the batch, so aux leaf "
          f"aux{jax.tree_util.keystr(path)} of shape {np.shape(x)} may hold per-example values, "
          "which averaging would mix up across examples. Pass aux_reduction='concat' "
          "(per-example outputs, concatenated in batch order), 'mean' (statistics, e.g. "
          "BatchNorm's) or 'stack' (a leading axis of length n_perturbations)."
        )
      return "mean"

    return jax.tree_util.tree_map_with_path(leaf, sub)

  try:
    return jax.tree.map(expand, how, aux, is_leaf=is_spec)
  except ValueError as error:
    if "aux leaf" in str(error):
      raise
    raise ValueError(
      f"aux_reduction={how!r} is not a prefix of the structure of aux: {error}"
    ) from error


def _reduce_group(x: Any, how: str) -> Any:
  """One group's outputs (leading axis: its perturbations) reduced for accumulation."""
  if how == "mean":
    if not _randomness.is_inexact(x):
      return x[0]
    return jnp.sum(x, axis=0)
  if how == "concat":
    if np.ndim(x) < 2:
      raise ValueError(
        f"aux_reduction='concat' needs per-example aux leaves with a batch axis; got a leaf of "
        f"shape {np.shape(x)[1:]}."
      )
    return x.reshape((-1, *x.shape[2:]))
  return x


def _merge(acc: Any, x: Any) -> Any:
  """The running sum of a "mean" leaf; other than floating leaves keep the first value."""
  return acc + x if _randomness.is_inexact(x) else acc


def _finish(acc: Any, how: str, n: int) -> Any:
  if how == "mean" and _randomness.is_inexact(acc):
    return acc / n
  return acc


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
  perturbation_scale: PerturbationScale = "isotropic",
  aux_reduction: Any = None,
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

  Devices. Under ``jit`` it works alike on meshes with ``Auto`` axes (the default) and with
  ``Explicit`` axes (``jax.make_mesh(..., axis_types=(jax.sharding.AxisType.Explicit,))``
  and ``jax.set_mesh``), with parameters replicated or sharded (FSDP), for any n, with
  ``split_batch``, ``antithetic``, ``perturbation_batch_size`` and every
  ``perturbation_scale``: the result equals the 1-device one, the draws bitwise, the batch
  means up to the float rounding of reductions split across devices. With explicit axes and
  ``split_batch``, each slice keeps the batch's sharding along its own batch axis when the
  mesh axes divide the slice (every perturbation then spreads over all the devices, which
  costs moving the batch between devices once), and is replicated otherwise; ``fun`` must
  itself be valid under explicit sharding (under FSDP it gathers the weights, e.g. with
  ``jax.sharding.reshard``). Inside ``shard_map`` or ``pmap``, pass ``axis_name``.

  Args:
    fun: the loss, ``fun(params, *args, **kwargs) -> value`` (or ``(value, aux)`` with
      ``has_aux``); ``value`` is a scalar. Integer and boolean leaves of ``params`` are
      passed through unperturbed and get ``float0`` gradients (as with
      ``jax.grad(..., allow_int=True)``), which ``fsgld``'s ``update`` turns into zero updates.
    n_perturbations: the number n ≥ 1 of perturbations averaged per step (the paper's runs
      use 1).
    has_aux: whether ``fun`` returns ``(value, aux)``; ``aux_reduction`` says how the n
      perturbations' aux values are combined.
    split_batch: give perturbation ``i`` the ``i``-th contiguous ``1/n`` slice, along the
      leading axis, of every leaf of the batched arguments; the batch size must divide by n.
    antithetic: use ±ε pairs (n even): perturbation ``i < n/2`` is ``+ε_i`` and
      perturbation ``i + n/2`` is ``−ε_i``. Their mean cancels the odd-order terms of the
      Taylor expansion around θ, so the gradient noise due to ε is lower. With
      ``split_batch`` the two members of a pair see different slices of the batch, so the
      odd-order terms cancel only in expectation over the data, not per step.
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
      ``split_batch=True`` with no batched array argument (a loss that closes over its
      batch) raises: it would silently cost n full-batch gradients.
    perturbation_batch_size: how many of the n perturbations to evaluate at once (vectorised
      with ``jax.vmap``); the n / ``perturbation_batch_size`` groups then run one after
      another, written out in the traced program and kept in sequence by a data dependency
      (each group's draws wait for the running sums of the groups before it), with running
      sums of values, gradients and averaged aux, and per-group "concat"/"stack" aux. The
      temporary memory is then that of ``perturbation_batch_size`` perturbations whatever n
      is (on a 2-hidden-layer MLP, n = 8 one at a time needs less than 2× the parameter bytes
      more temporary memory than n = 1). The groups are not a ``lax.scan``: XLA:CPU runs
      convolutions inside a loop body several times slower (measured on a 1-D CNN with
      n = 8 and ``split_batch``: 1.24× an SGD step written out, 8.1× in a scan). ``None``
      (default): all n at once (n copies of the weights, gradients and activations alive
      together). Results agree with the vectorised ones up to the float rounding of the
      summation order (the sum over groups is taken group by group, then divided by n: a
      few ulp for float32). On CPU, a convolution vectorised over n weight tensors becomes a
      grouped convolution that XLA runs many times slower than n plain ones (a ResNet-18
      step with n = 8 and ``split_batch`` takes about 5 SGD steps vectorised, about 1 with
      ``1``), so use ``1`` for convolutional networks there. Must divide n. The draws ε_i
      are the same for every value.
    perturbation_scale: how the scale of ε depends on the weights. ``"isotropic"`` (the
      paper): every coordinate gets σ, and the smoothed loss is
      :math:`U + \tfrac{\sigma^2}{2}\operatorname{tr}\nabla^2 U`. ``"filter"`` (m-RWP,
      Li et al. 2024): each output filter :math:`f` (the last axis of a kernel: Dense
      ``(in, out)``, Conv ``(..., in, out)``) gets :math:`\sigma\lVert w_f\rVert`, 1-D and
      scalar leaves :math:`\sigma\lVert w\rVert`; the smoothing is then
      :math:`\tfrac{\sigma^2}{2}\sum_f \lVert w_f\rVert^2 \operatorname{tr}\nabla^2_{w_f}U`,
      invariant to rescaling a filter in a network with BatchNorm. ``"element"`` (as in
      ASAM): coordinate i gets :math:`\sigma|w_i|`, smoothing by
      :math:`\tfrac{\sigma^2}{2}\sum_i w_i^2\,\partial_i^2 U`. The scales are computed from
      the current weights and not differentiated (as m-RWP does); under ``jit`` with
      sharded weights a filter's norm is the global one. With a weight-dependent scale the
      smoothed loss depends on θ through the scale too, so the Langevin chain's stationary
      law is no longer exactly :math:`\exp(-\beta U_\sigma)`: use these scales for
      optimisation (flat minima), the isotropic one for sampling.
    aux_reduction: how ``aux`` is combined over the n perturbations: ``"mean"`` (floating
      leaves averaged, e.g. BatchNorm batch statistics, which gives one running-average
      update with the mean batch statistics; other leaves from the first perturbation),
      ``"concat"`` (per-example leaves concatenated along axis 0, in batch order with
      ``split_batch``), ``"stack"`` (a new leading axis of length n), or a pytree prefix of
      ``aux`` with those strings (or ``None``) as leaves. ``None`` (default): ``"mean"``,
      except that with ``split_batch`` and n > 1 an aux leaf with a shape raises an error
      asking for a choice, since averaging per-example values across slices would silently
      mix up examples (scalar leaves are averaged, which is right for means over equal
      slices).

  Returns:
    ``f(params, opt_state, *args, **kwargs) -> (value, grads)`` or
    ``((value, aux), grads)`` with ``has_aux``, like ``jax.value_and_grad``.

  Raises:
    ValueError: for n < 1, an odd n with ``antithetic``, an unknown ``perturbation`` or
      ``perturbation_scale``, ``per_device_perturbations`` without ``axis_name``, a
      ``perturbation_batch_size`` that does not divide n; when called, for an ``opt_state``
      with no or several sources of perturbations, params that do not match the state, a
      batch that ``split_batch`` cannot divide or that has no batched argument, an ambiguous
      per-example ``aux`` under ``split_batch``.

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
  for flag, value in (
    ("has_aux", has_aux),
    ("split_batch", split_batch),
    ("antithetic", antithetic),
    ("per_device_perturbations", per_device_perturbations),
  ):
    _validation.check_bool(flag, value)
  _validation.check_axis_name("axis_name", axis_name)
  _validation.check_argnums("batch_argnums", batch_argnums)
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
  _randomness.check_distribution("perturbation_scale", perturbation_scale, PerturbationScale)
  for spec in jax.tree.leaves(aux_reduction, is_leaf=lambda x: x is None):
    if spec is not None and spec not in get_args(AuxReduction):
      raise ValueError(
        f"aux_reduction must be one of {get_args(AuxReduction)} or a pytree prefix of aux with "
        f"those as leaves, got {aux_reduction!r}."
      )
  n = n_perturbations
  size = n if perturbation_batch_size is None else perturbation_batch_size
  num_keys = n // 2 if antithetic else n
  # Integer and boolean leaves of params are skipped: never perturbed, float0 gradients.
  with_aux = fun if has_aux else (lambda *a, **k: (fun(*a, **k), None))
  value_and_grad = jax.value_and_grad(with_aux, has_aux=True, allow_int=True)

  def wrapped(params: Any, opt_state: optax.OptState, *args: Any, **kwargs: Any) -> Any:
    state = find_fsgld_state(opt_state)
    seen = _seen_leaves(state.perturbed, params)
    if axis_name is not None:
      params = _as_varying(params, axis_name)
    key = _randomness.perturbation_key(state.rng_key, state.count)
    if per_device_perturbations:
      key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    keys = jax.random.split(key, num_keys)
    sigma = state.sigma

    def perturb(p: Any, e: Any, sees: bool) -> Any:
      # One buffer for θ + σε, so the draw is never recomputed inside the consumers that
      # broadcast a parameter over activations (see _randomness.materialize).
      if not (sees and _randomness.is_inexact(p)):
        return p
      scale = _scale(p, sigma, perturbation_scale)
      return _randomness.materialize((p + scale * e).astype(p.dtype))

    def value_and_grad_at(index: int | jax.Array, sign: Any, after: Any, *args: Any) -> Any:
      noise = _randomness.standard_noise_like(keys[index], params, perturbation)
      noise = jax.tree.map(lambda e: sign * e if _randomness.is_inexact(e) else e, noise)
      if after is not None:  # Zeros that make these draws wait for the previous groups.
        noise = jax.tree.map(lambda e, z: e + z if _randomness.is_inexact(e) else e, noise, after)
      return value_and_grad(jax.tree.map(perturb, params, noise, seen), *args, **kwargs)

    num_groups = n // size
    split_argnums: tuple[int, ...] = ()
    if split_batch and n > 1:
      split_argnums = _batch_argnums(batch_argnums, len(args))
      if not jax.tree.leaves([args[i] for i in split_argnums]):
        raise ValueError(
          "split_batch=True needs a batched positional argument to split, but the function got "
          f"none (batch_argnums={batch_argnums!r}, {len(args)} arguments after "
          "(params, opt_state)). A loss that closes over its batch would silently cost "
          f"{n} full-batch gradients: pass the batch as an argument, or split_batch=False."
        )
    # Batched arguments get two leading axes (group g, member j): perturbation g * size + j
    # sees slice g * size + j of the batch.
    grouped = [
      jax.tree.map(lambda x, i=i: _split_leading(x, num_groups, size, i), a)
      if i in split_argnums
      else None
      for i, a in enumerate(args)
    ]

    def group(index: Any, group_args: list[Any], after: Any = None) -> list[Any]:
      """Flat outputs of perturbations ``index * size + j``, stacked along a leading ``j`` axis.

      ``after``: zeros like the parameters that depend on the previous groups' gradient sums;
      added to this group's draws, they make it wait for them, so groups run one after
      another.
      """
      indices = index * size + np.arange(size)
      signs = jnp.where(indices < num_keys, 1.0, -1.0).astype(jnp.float32)
      key_index = indices % num_keys
      full = [a if g is None else g for a, g in zip(args, group_args, strict=True)]
      if size == 1:
        squeezed = [
          a if g is None else jax.tree.map(lambda x: x[0], a)
          for a, g in zip(full, group_args, strict=True)
        ]
        out = value_and_grad_at(key_index[0], signs[0], after, *squeezed)
        out = jax.tree.map(lambda x: x[None], out)
      else:
        axes = [None if g is None else 0 for g in group_args]
        out = jax.vmap(value_and_grad_at, in_axes=(0, 0, None, *axes), axis_size=size)(
          key_index, signs, after, *full
        )
      (value_g, aux_g), grads_g = out
      return [value_g, aux_g, grads_g]

    if n == 1:
      (value, aux), grads = value_and_grad_at(0, np.float32(1.0), None, *args)
      hows = _reductions(aux, aux_reduction, split_batch, n)
      aux = jax.tree.map(
        lambda how, a: jax.tree.map(lambda x: x[None] if how == "stack" else x, a),
        hows,
        aux,
        is_leaf=lambda x: isinstance(x, str),
      )
    else:
      at = lambda g: [None if a is None else jax.tree.map(lambda x: x[g], a) for a in grouped]
      out_0 = group(0, at(0))
      hows = [
        "mean",
        _reductions(jax.tree.map(lambda x: x[0], out_0[1]), aux_reduction, split_batch, n),
        "mean",
      ]
      is_how = lambda x: isinstance(x, str)
      leaves_0, treedef = jax.tree.flatten(out_0)
      how_leaves = jax.tree.leaves(
        jax.tree.map(lambda how, x: jax.tree.map(lambda _: how, x), hows, out_0, is_leaf=is_how)
      )
      reduce = lambda leaves: [_reduce_group(x, h) for x, h in zip(leaves, how_leaves, strict=True)]
      first = reduce(leaves_0)
      # Running sums of the "mean" leaves; "concat"/"stack" leaves are kept per group.
      sums = [x if h == "mean" else None for x, h in zip(first, how_leaves, strict=True)]
      kept = [None if h == "mean" else x[None] for x, h in zip(first, how_leaves, strict=True)]
      for g in range(1, num_groups):
        # The groups are written out one after another (a loop body of XLA:CPU runs
        # convolutions several times slower). A data dependency, not a barrier (XLA removes
        # those early), keeps them in sequence: the next group's draws add zeros computed
        # elementwise from the running gradient sums (laid out like the parameters, so no
        # communication on any mesh; NaN and inf give zeros too), so one group's weights,
        # activations and gradients are alive at a time (tests/test_memory.py checks it).
        grad_sums = jax.tree.unflatten(treedef, sums)[2]
        after = jax.tree.map(
          lambda p, g: (
            jnp.zeros_like(p)
            if g is None or not _randomness.is_inexact(g)
            else jax.lax.stop_gradient(0.0 * jnp.where(jnp.isfinite(g), g, 0.0)).astype(p.dtype)
          ),
          params,
          grad_sums,
          is_leaf=lambda x: x is None,
        )
        out = reduce(jax.tree.leaves(group(g, at(g), after)))
        sums = [None if a is None else _merge(a, x) for a, x in zip(sums, out, strict=True)]
        kept = [
          k if k is None else jnp.concatenate([k, x[None]])
          for k, x, h in zip(kept, out, how_leaves, strict=True)
        ]
      # "concat" and "stack" leaves: (group, member, ...) or (group, member x example, ...).
      leaves = [
        _finish(s, h, n) if k is None else k.reshape((-1, *k.shape[2:]))
        for s, k, h in zip(sums, kept, how_leaves, strict=True)
      ]
      value, aux, grads = jax.tree.unflatten(treedef, leaves)
    if axis_name is not None:
      value = jax.lax.pmean(value, axis_name)
      grads = jax.tree.map(
        lambda g: jax.lax.pmean(g, axis_name) if _randomness.is_inexact(g) else g, grads
      )
    return ((value, aux), grads) if has_aux else (value, grads)

  return wrapped
