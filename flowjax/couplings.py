"""Couplings between source and data minibatches.

A coupling is a pure function ``coupling(key, x0, x1, labels=None) -> (i0, i1)`` returning index
arrays of length ``n``: the training pairs are ``(x0[i0], x1[i1])`` (and ``labels[i1]``). Returning
indices, not arrays, keeps labels and any other per-sample data aligned.

- :func:`independent`: the product coupling (plain CFM).
- :func:`ot_exact`: minibatch optimal transport by exact assignment (scipy's
  ``linear_sum_assignment`` through a host callback on CPU, ott-jax's Hungarian solver on
  accelerators; ``solver=`` picks), the permutation minimising the squared distance (Tong et al. 2302.00482, Pooladian et al.
  2304.14772).
- :func:`ot_sinkhorn`: entropic OT (ott-jax Sinkhorn with regularisation ``epsilon``); pairs are
  either sampled from the plan (``sample=True``, as torchcfm) or taken as the row-wise argmax.
- :func:`class_conditional`: wraps an OT coupling so that pairs never cross labels.
- :func:`ot_exact_host` and :func:`ot_paired_batch_fn`: the same exact OT solved on the host in the
  data pipeline, before the step, so that with :func:`flowjax.data.prefetch` the solves of the next
  steps overlap the current one (several at once on host threads).

The couplings are jit-compatible. Under data sharding, :func:`per_shard` runs a coupling on each shard
independently (pairing within the shard, as every multi-device OT-CFM implementation does).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike
from ott.geometry import pointcloud
from ott.solvers import linear as ott_linear
from ott.tools import unreg

from flowjax import keystreams

Coupling = Callable[..., tuple[Array, Array]]

_LARGE_COST = 1e6


def _check_pair(x0: Array, x1: Array) -> None:
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape for pairing, got {x0.shape} and {x1.shape}.")


def _flat(x: Array) -> Array:
    return x.reshape(x.shape[0], -1)


def _cost_matrix(x0: Array, x1: Array, labels: Array | None) -> Array:
    a, b = _flat(x0), _flat(x1)
    cost = jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None, :] - 2.0 * a @ b.T
    return jnp.maximum(cost, 0.0)


def independent() -> Coupling:
    """The independent (product) coupling: pairs as drawn."""

    def couple(key: Array, x0: Array, x1: Array, labels: Array | None = None) -> tuple[Array, Array]:
        _check_pair(x0, x1)
        idx = jnp.arange(x0.shape[0])
        return idx, idx

    return couple


OT_EXACT_SOLVERS = ("auto", "scipy", "ott", "pot")


def _host_assign(cost: np.ndarray, *, dtype, method: str) -> np.ndarray:
    """Host side of the ``"scipy"`` and ``"pot"`` solvers: ``i0[..., j]`` is the row assigned to column ``j``.

    ``cost`` is ``(..., n, n)`` (leading axes come from ``vmap``, see ``vmap_method`` below); each
    trailing matrix is one assignment problem, solved in float64 by scipy's shortest augmenting path
    (Jonker-Volgenant) ``linear_sum_assignment`` or by POT's network simplex ``ot.emd`` with uniform
    marginals (a vertex of the Birkhoff polytope, i.e. a permutation, read off by its column argmax).
    """
    cost = np.asarray(cost, np.float64)
    n = cost.shape[-1]
    flat = cost.reshape((-1, n, n))
    out = np.empty((flat.shape[0], n), dtype)
    for b in range(flat.shape[0]):
        if not np.all(np.isfinite(flat[b])):
            # The solvers raise on NaN/inf, which would abort the jitted step; return the identity
            # instead (the NaNs still reach the loss, where the step's non-finite guard sees them).
            out[b] = np.arange(n)
            continue
        if method == "pot":
            import ot

            w = np.full(n, 1.0 / n)
            # POT's default cap of 1e5 simplex iterations stops short of optimality at n = 2048
            # in 64-D (measured), so allow far more; result_code 1 means optimal.
            plan, log = ot.emd(w, w, flat[b], numItermax=max(100_000, 50 * n * n), log=True)
            i0 = np.argmax(plan, axis=0)
            if log.get("result_code") == 1 and np.array_equal(np.sort(i0), np.arange(n)):
                out[b] = i0
                continue
            # not proven optimal or not a permutation: solve with scipy instead
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(flat[b])
        out[b, cols] = rows
    return out.reshape(cost.shape[:-1])


def _assign_host(cost: Array, method: str) -> Array:
    dtype = jnp.arange(cost.shape[-1]).dtype  # int32, or int64 under x64 (like the data indices)
    # "broadcast_all": under vmap the host receives the whole batch of cost matrices in one call
    # (leading axes), which _host_assign loops over; no per-element dispatch.
    return jax.pure_callback(
        functools.partial(_host_assign, dtype=np.dtype(dtype), method=method),
        jax.ShapeDtypeStruct(cost.shape[:-1], dtype),
        cost,
        vmap_method="broadcast_all",
    )


def _assign_ott(cost: Array) -> Array:
    from ott.geometry import geometry

    with jax.numpy_rank_promotion("allow"):  # ott-jax internals rely on implicit promotion
        _, out = unreg.hungarian(geometry.Geometry(cost_matrix=cost))
    rows, cols = out.paired_indices
    # Reorder so that the data side stays in its original order.
    return jnp.zeros_like(rows).at[cols].set(rows)


def _pot_available() -> bool:
    try:
        import ot  # noqa: F401
    except ImportError:
        return False
    return True


def _resolve_solver(solver: str) -> str:
    if solver != "auto":
        return solver
    # On the CPU backend the host callback costs no device transfer, and the compiled host solvers
    # beat ott's jitted Hungarian loop by far (benchmarks/otcfm_step.py, whole OT-CFM step on 2-D data:
    # scipy 4.5x faster than ott at batch 2048, POT's network simplex another 4.3x faster than scipy;
    # in 64-D scipy was 1.3x faster than POT). POT (a dependency of the package, the solver torchcfm
    # uses) is preferred when importable, scipy otherwise. On GPU/TPU the callback would copy the
    # n x n cost matrix to the host and synchronise every step (and solve on one host core), while
    # ott's solver stays on the device inside the compiled step, so "auto" keeps ott there.
    if jax.default_backend() != "cpu":
        return "ott"
    return "pot" if _pot_available() else "scipy"


def ot_exact(*, solver: str = "auto") -> Coupling:
    """Exact minibatch OT: the assignment minimising ``sum_i |x0[i0_i] - x1[i]|^2``.

    With uniform weights and equal batch sizes exact OT has a permutation as an optimal plan
    (Birkhoff), so it is the linear assignment problem on the squared-distance matrix (Tong et al.
    2302.00482, Pooladian et al. 2304.14772). With ``labels``, cross-label pairs get a large cost
    (class-conditional OT).

    Args:
      solver: ``"scipy"``: ``scipy.optimize.linear_sum_assignment`` on the host through
        ``jax.pure_callback`` (jit- and vmap-compatible; the solve happens on the host CPU).
        ``"ott"``: ott-jax's Hungarian solver, compiled into the step (stays on the device).
        ``"pot"``: POT's network simplex ``ot.emd`` (torchcfm's solver) through the same host
        callback, falling back to scipy when POT does not report an optimum; the fastest on CPU at
        large batches for low-dimensional data (see the benchmark ``otcfm_step``).
        ``"auto"`` (default): on JAX's CPU backend ``"pot"`` (``"scipy"`` if POT cannot be
        imported), ``"ott"`` otherwise. All give an optimal assignment; with ties in the cost they may pick different
        (equally optimal) permutations.

    Returns:
      A coupling returning ``(i0, arange(n))``: ``i0`` a permutation of ``0..n-1``.
    """
    if solver not in OT_EXACT_SOLVERS:
        raise ValueError(f"`solver` must be one of {OT_EXACT_SOLVERS}, got {solver!r}.")
    if solver == "pot":
        try:
            import ot  # noqa: F401
        except ImportError as e:
            raise ImportError('ot_exact(solver="pot") needs POT (`pip install pot`); "scipy" needs nothing extra.') from e

    def couple(key: Array, x0: Array, x1: Array, labels: Array | None = None) -> tuple[Array, Array]:
        _check_pair(x0, x1)
        if labels is not None and labels.shape != (x1.shape[0],):
            raise ValueError(f"`labels` must have shape ({x1.shape[0]},), got {labels.shape}.")
        cost = _cost_matrix(x0, x1, labels)
        if labels is not None:
            cost = cost + _LARGE_COST * (labels[:, None] != labels[None, :])
        method = _resolve_solver(solver)
        i0 = _assign_ott(cost) if method == "ott" else _assign_host(cost, method)
        return i0, jnp.arange(x1.shape[0])

    return couple


HOST_SOLVERS = ("auto", "pot", "scipy")


def _host_method(solver: str) -> str:
    if solver not in HOST_SOLVERS:
        raise ValueError(f"`solver` must be one of {HOST_SOLVERS}, got {solver!r}.")
    if solver == "auto":
        return "pot" if _pot_available() else "scipy"
    if solver == "pot" and not _pot_available():
        raise ImportError('solver="pot" needs POT (`pip install pot`); "scipy" needs nothing extra.')
    return solver


# Up to this many features the host cost matrix is built by scipy's cdist (one thread, exact
# differences); above it by a BLAS matrix product, whose cost grows with the features.
_CDIST_MAX_FEATURES = 16


def _host_sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``a`` and ``b`` (float64, NumPy)."""
    if a.shape[1] <= _CDIST_MAX_FEATURES:
        # Low-dimensional data: the matrix product is tiny, but a threaded BLAS runs it on all
        # cores and then spins, and its calls from several prefetch threads wait for each other.
        # That halved the pipelined OT-CFM throughput at batch 512 in 2-D (measured); cdist
        # avoids BLAS and computes the differences exactly.
        from scipy.spatial.distance import cdist

        return cdist(a, b, "sqeuclidean")
    return np.maximum(np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None, :] - 2.0 * a @ b.T, 0.0)


def ot_exact_host(x0: ArrayLike, x1: ArrayLike, labels: ArrayLike | None = None, *, solver: str = "auto") -> np.ndarray:
    """Exact minibatch OT solved on the host, outside any jitted step: ``(x0[i0], x1)`` are the pairs.

    The same assignment problem as :func:`ot_exact` (squared Euclidean cost over flattened features,
    cross-label pairs forbidden when ``labels`` are given), with the cost built in float64 on the host
    (scipy's ``cdist`` up to 16 features, a BLAS product above).
    For pipelines that pair a batch before the step (:func:`ot_paired_batch_fn`).

    Args:
      x0, x1: ``(n, ...)`` arrays of the same shape, finite.
      labels: optional integer labels ``(n,)`` of the data (pairs stay within a label).
      solver: ``"pot"`` (POT's network simplex, falling back to scipy unless POT reports an
        optimum), ``"scipy"`` (``linear_sum_assignment``) or ``"auto"`` (POT when importable).

    Returns:
      ``i0``: a NumPy integer permutation of ``0..n-1``.
    """
    x0, x1 = np.asarray(x0), np.asarray(x1)
    if x0.ndim < 1 or x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape (n, ...) for pairing, got {x0.shape} and {x1.shape}.")
    method = _host_method(solver)
    n = x1.shape[0]
    a, b = x0.reshape(n, -1).astype(np.float64), x1.reshape(n, -1).astype(np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("x0 and x1 must be finite for exact OT pairing.")
    cost = _host_sq_distances(a, b)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"`labels` must be integers of shape ({n},), got {labels.dtype} {labels.shape}.")
        cost = cost + _LARGE_COST * (labels[:, None] != labels[None, :])
    return _host_assign(cost, dtype=np.dtype(np.intp), method=method)


def ot_paired_batch_fn(
    batch_fn: Callable[[int], Any],
    *,
    seed: int,
    solver: str = "auto",
    labels: str | None = None,
    source: Callable[[Array, tuple, Any], ArrayLike] | None = None,
) -> Callable[[int], dict]:
    """Minibatch OT-CFM pairs made in the data pipeline: ``step -> {"x0": paired source, "x1": data, ...}``.

    The OT-CFM coupling (Tong et al. 2302.00482) depends on the source and data draws only, not on
    the parameters, so it can be solved before the step instead of inside it (:func:`ot_exact`).
    With :func:`flowjax.data.prefetch` the solves of the next steps then run on host threads while
    the current step runs, several at once (POT and scipy release the GIL). Train with
    ``losses.cfm(v, key, batch["x1"], x0=batch["x0"])`` (independent coupling: the pairs are made).

    The source draw of step ``k`` is ``source(keystreams.source_key(seed, k), shape, dtype)``
    (default standard Gaussian noise), so the batch is a pure function of the step and a resumed run
    sees the same pairs. In distribution this is the same training signal as ``ot_exact`` in the
    step; the draws differ (the step's key is not used).

    Args:
      batch_fn: ``batch_fn(step)`` returning the data ``x1`` ``(n, ...)``, or a dict with ``"x1"`` and
        other per-sample entries (kept as they are: the data order is not changed).
      seed: seed of the source stream.
      solver: host solver, see :func:`ot_exact_host`.
      labels: name of a dict entry with integer labels ``(n,)`` to pair within (class-conditional OT).
      source: ``source(key, shape, dtype) -> x0``; default ``jax.random.normal``.

    Returns:
      ``paired(step)`` returning a dict with ``"x0"`` (NumPy, paired to ``x1``), ``"x1"`` and the other
      entries of ``batch_fn``'s dict.

    Example:
      >>> import numpy as np
      >>> from flowjax.data import prefetch
      >>> data = lambda step: np.random.default_rng(step).normal(size=(64, 2)).astype(np.float32) + 3.0
      >>> batches = prefetch(ot_paired_batch_fn(data, seed=0), workers=2)
      >>> sorted(batches(0))
      ['x0', 'x1']
      >>> batches.close()
    """
    if not callable(batch_fn):
        raise TypeError(f"`batch_fn` must be callable, got {type(batch_fn).__name__}.")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"`seed` must be an integer, got {seed!r}.")
    _host_method(solver)  # validates before any work
    draw = source or (lambda key, shape, dtype: jax.random.normal(key, shape, dtype))
    host = jax.local_devices(backend="cpu")[0]

    def paired(step: int) -> dict:
        batch = batch_fn(step)
        if isinstance(batch, Mapping):
            if "x1" not in batch:
                raise KeyError(f"a dict batch must hold the data under 'x1'; it has {sorted(batch)}.")
            if "x0" in batch:
                raise ValueError("the batch already has an 'x0'; ot_paired_batch_fn draws and pairs the source itself.")
            out = dict(batch)
        else:
            out = {"x1": batch}
        x1 = np.asarray(out["x1"])
        if labels is not None and labels not in out:
            raise KeyError(f"`labels` names {labels!r}, which the batch does not have ({sorted(out)}).")
        # drawn on the host CPU device, so that the pipeline never queues work behind the step on an
        # accelerator (JAX's random bits are the same on every backend)
        with jax.default_device(host):
            x0 = np.asarray(draw(keystreams.source_key(int(seed), step), x1.shape, x1.dtype))
        if x0.shape != x1.shape:
            raise ValueError(f"`source` returned shape {x0.shape}, expected {x1.shape}.")
        i0 = ot_exact_host(x0, x1, None if labels is None else out[labels], solver=solver)
        out["x0"] = x0[i0]
        return out

    return paired


def sinkhorn_plan(x0: Array, x1: Array, *, epsilon: float, labels: Array | None = None, max_iterations: int = 2000) -> Array:
    """The entropic OT plan between uniform empirical measures (rows: x0, columns: x1).

    ``epsilon`` is relative to the mean squared distance of the batch (ott's ``relative_epsilon``
    with the ``"mean"`` scale), so one value works across data scales.
    """
    _check_pair(x0, x1)
    cost = _cost_matrix(x0, x1, labels)
    if labels is not None:
        cost = cost + _LARGE_COST * (labels[:, None] != labels[None, :])
    from ott.geometry import geometry

    geom = geometry.Geometry(cost_matrix=cost, epsilon=epsilon, relative_epsilon="mean")
    # ott-jax relies on implicit rank promotion internally; allow it whatever the caller's setting.
    with jax.numpy_rank_promotion("allow"):
        out = ott_linear.solve(geom, max_iterations=max_iterations)
        return out.matrix


def ot_sinkhorn(epsilon: float = 0.05, *, sample: bool = True, max_iterations: int = 2000) -> Coupling:
    """Entropic minibatch OT (Sinkhorn via ott-jax).

    Args:
      epsilon: entropic regularisation, relative to the batch's mean squared distance.
      sample: if True, each data point ``x1[j]`` draws its partner from the plan's column ``j``
        (the conditional plan); if False, takes the column's most likely partner.
    """
    if epsilon <= 0:
        raise ValueError(f"`epsilon` must be positive, got {epsilon}.")

    def couple(key: Array, x0: Array, x1: Array, labels: Array | None = None) -> tuple[Array, Array]:
        plan = sinkhorn_plan(x0, x1, epsilon=epsilon, labels=labels, max_iterations=max_iterations)
        logits = jnp.log(jnp.maximum(plan.T, 1e-30))  # (n1, n0): row j is the conditional of x0 given x1[j]
        if sample:
            i0 = jax.random.categorical(key, logits, axis=-1)
        else:
            i0 = jnp.argmax(logits, axis=-1)
        return i0, jnp.arange(x1.shape[0])

    return couple


def class_conditional(base: Coupling | None = None) -> Coupling:
    """Pair only within a label: ``base`` (default exact OT) with cross-label pairs forbidden.

    Requires ``labels`` at call time; every label must occur equally often among x0 and x1
    slots, which holds because the source is relabelled with the data's labels.
    """
    base = base or ot_exact()

    def couple(key: Array, x0: Array, x1: Array, labels: Array | None = None) -> tuple[Array, Array]:
        if labels is None:
            raise ValueError("class_conditional coupling needs `labels` (one per data sample).")
        return base(key, x0, x1, labels=labels)

    return couple


def per_shard(base: Coupling, mesh: jax.sharding.Mesh, axis: str = "data") -> Coupling:
    """Run ``base`` independently on each data shard (no cross-device communication).

    Global indices are returned, so the result is used exactly like ``base``'s. Each shard's key is
    ``fold_in(key, shard_index)``. :func:`shard_local` computes the same pairing without a mesh. ``check_vma=False`` because the solvers' while loops carry
    replicated constants (optax's Hungarian algorithm), which the varying-axis check rejects.
    """
    from jax.sharding import PartitionSpec as P

    def local(key, x0, x1, labels):
        shard = jax.lax.axis_index(axis)
        i0, i1 = base(jax.random.fold_in(key, shard), x0, x1, labels=labels)
        offset = shard * x0.shape[0]
        return i0 + offset, i1 + offset

    def couple(key: Array, x0: Array, x1: Array, labels: Array | None = None) -> tuple[Array, Array]:
        _check_pair(x0, x1)
        spec = P(axis)
        fn = jax.shard_map(
            local, mesh=mesh, in_specs=(P(), spec, spec, None if labels is None else spec),
            out_specs=(spec, spec), check_vma=False,
        )
        return fn(key, x0, x1, labels)

    return couple


def coupling_by_name(name: str, **kwargs) -> Coupling:
    factories = {"independent": independent, "ot": ot_exact, "ot_exact": ot_exact, "ot_sinkhorn": ot_sinkhorn}
    if name not in factories:
        raise ValueError(f"unknown coupling {name!r}; choose one of {tuple(factories)}.")
    return factories[name](**kwargs)


# --------------------------------------------------------------------------------------------
# Additions for the W-CFM / OT-CFM family (torchcfm parity): Gibbs weights, entropic plans in
# absolute units, sampling pairs from a plan, pairing pools larger than the training batch, and
# per-shard pairing.
# --------------------------------------------------------------------------------------------
COSTS = ("euclidean", "sqeuclidean")


def pair_cost(x0: Array, x1: Array, *, cost: str = "euclidean") -> Array:
    """Per-pair cost ``c(x0_i, x1_i)`` of aligned rows, shape ``(n,)`` (features flattened).

    ``"euclidean"`` is ``||x0 - x1||_2`` (W-CFM's default, 2507.22270), ``"sqeuclidean"`` its square.
    """
    _check_pair(x0, x1)
    if cost not in COSTS:
        raise ValueError(f"`cost` must be one of {COSTS}, got {cost!r}.")
    sq = jnp.sum((_flat(x0) - _flat(x1)) ** 2, axis=-1)
    if cost == "sqeuclidean":
        return sq
    # sqrt has an infinite derivative at 0; the weights carry no gradient anyway (data only).
    return jnp.sqrt(jnp.maximum(sq, 0.0))


WEIGHT_NORMALISATIONS = ("none", "mean", "batch_min")


def gibbs_weights(
    x0: Array,
    x1: Array,
    *,
    epsilon: float,
    cost: str = "euclidean",
    c_ref: float = 0.0,
    normalize: str = "none",
) -> Array:
    """W-CFM pair weights ``w_i = exp(-(c(x0_i, x1_i) - c_ref) / epsilon)`` (2507.22270, Sec. 3).

    Args:
      x0, x1: aligned source and data rows ``(n, ...)`` (independent pairs).
      epsilon: temperature ``epsilon > 0``; ``inf`` gives weights exactly 1 (I-CFM). May be traced.
      cost: ``"euclidean"`` (the paper's, unsquared) or ``"sqeuclidean"``.
      c_ref: a FIXED shift chosen before training (e.g. the median cost of random pairs). It only
        rescales the loss by the global constant ``exp(c_ref/epsilon)``, so the minimiser is unchanged.
      normalize: ``"none"`` (the paper's loss), ``"mean"`` (divide by the batch mean of w) or
        ``"batch_min"`` (shift by the batch's min cost). The last two are common implementation
        choices (ours to offer, not the paper's loss): each multiplies the batch's loss by a
        batch-dependent factor, which keeps the within-batch gradient direction but changes the
        expected objective at small batch (spec wcfm.md Tests 6).

    Returns:
      ``(n,)`` non-negative weights. They are functions of the data only (no model gradient).
    """
    if not isinstance(epsilon, jax.core.Tracer) and not (epsilon > 0):
        raise ValueError(f"`epsilon` must be positive (inf allowed), got {epsilon}.")
    if normalize not in WEIGHT_NORMALISATIONS:
        raise ValueError(f"`normalize` must be one of {WEIGHT_NORMALISATIONS}, got {normalize!r}.")
    c = pair_cost(x0, x1, cost=cost)
    shift = jnp.min(c) if normalize == "batch_min" else c_ref
    w = jnp.exp(-(c - shift) / epsilon)
    if normalize == "mean":
        w = w / jnp.mean(w)
    return w


def entropic_plan(
    x0: Array,
    x1: Array,
    *,
    reg: float,
    labels: Array | None = None,
    a: Array | None = None,
    b: Array | None = None,
    max_iterations: int = 5000,
    threshold: float | None = None,
) -> Array:
    """Entropic OT plan with ABSOLUTE regularisation ``reg`` on the squared-Euclidean cost.

    ``pi = argmin <pi, C> - reg H(pi)`` over plans with marginals ``a`` (rows, x0) and ``b``
    (columns, x1), uniform by default, solved by log-domain Sinkhorn (ott-jax). This is torchcfm's
    ``OTPlanSampler(method="sinkhorn", reg=...)`` and, with ``reg = 2 sigma^2``, the Schrodinger
    bridge plan of SB-CFM (Tong et al. 2302.00482). Rows ``(n0,)`` and columns ``(n1,)`` may differ.

    ``threshold`` is ott's stopping tolerance on the L1 marginal error; by default 1e-6 in float32
    and 1e-9 in float64. (A float32 solve levels off near 1e-7, so the former default of 1e-9 was
    never met and every call ran all ``max_iterations``: 5000 iterations, 2.8 s at n = 256, where
    10 iterations reach the same plan to 5e-7 relative; SB-CFM's training step took 12 s.)
    """
    if not reg > 0:
        raise ValueError(f"`reg` must be positive, got {reg}.")
    if x0.shape[1:] != x1.shape[1:]:
        raise ValueError(f"x0 and x1 must have the same feature shape, got {x0.shape} and {x1.shape}.")
    cost = _cost_matrix(x0, x1, None)
    if labels is not None:
        cost = cost + _LARGE_COST * (labels[:, None] != labels[None, :])
    from ott.geometry import geometry

    if threshold is None:
        threshold = 1e-9 if cost.dtype == jnp.float64 else 1e-6
    geom = geometry.Geometry(cost_matrix=cost, epsilon=reg)
    with jax.numpy_rank_promotion("allow"):  # ott-jax relies on implicit rank promotion internally
        out = ott_linear.solve(geom, a=a, b=b, max_iterations=max_iterations, threshold=threshold)
        return out.matrix


def sample_plan(key: Array, plan: Array, num: int, *, replace: bool = True) -> tuple[Array, Array]:
    """Draw ``num`` index pairs ``(i0, i1)`` with probability ``plan[i0, i1] / sum(plan)``.

    torchcfm's ``OTPlanSampler.sample_map``: with replacement pairs may repeat or be dropped (unbiased
    but noisier); ``replace=False`` draws distinct cells (Gumbel top-k).

    With replacement the draw is two-stage and exact: the row ``i0`` from the row marginal, then
    ``i1`` from that row's conditional. That costs ``num * (n0 + n1)`` Gumbel draws rather than
    ``num * n0 * n1`` for one categorical over the flattened plan (2 s per call at n = 256).
    """
    logp = jnp.log(jnp.maximum(plan, 0.0))
    if replace:
        k_row, k_col = jax.random.split(key)
        i0 = jax.random.categorical(k_row, jax.nn.logsumexp(logp, axis=1), shape=(num,))
        i1 = jax.random.categorical(k_col, logp[i0], axis=-1)
        return i0, i1
    flat = (logp - jnp.log(jnp.sum(plan))).reshape(-1)
    g = flat + jax.random.gumbel(key, flat.shape, flat.dtype)
    idx = jax.lax.top_k(g, num)[1]
    return idx // plan.shape[1], idx % plan.shape[1]


def ot_entropic(reg: float, *, replace: bool = True, max_iterations: int = 5000) -> Coupling:
    """Entropic OT coupling in absolute units, pairs sampled from the flattened plan (torchcfm style).

    Used by SB-CFM with ``reg = 2 sigma^2``. Returns ``(i0, i1)`` of length ``n = x1.shape[0]``.
    """
    if not reg > 0:
        raise ValueError(f"`reg` must be positive, got {reg}.")

    def couple(key: Array, x0: Array, x1: Array, labels: Array | None = None) -> tuple[Array, Array]:
        plan = entropic_plan(x0, x1, reg=reg, labels=labels, max_iterations=max_iterations)
        return sample_plan(key, plan, x1.shape[0], replace=replace)

    return couple


def pooled(base: Coupling, num_pairs: int) -> Coupling:
    """Pair over a pool LARGER than the training batch, then keep ``num_pairs`` pairs.

    Call the result with pools ``x0, x1`` of ``m >= num_pairs`` rows: ``base`` pairs the whole pool
    (e.g. exact OT on ``m`` points, closer to the population plan than OT on ``num_pairs``), and a
    uniformly random subset of ``num_pairs`` of its ``m`` pairs is returned. For an exact OT
    permutation this is sampling the plan without replacement.
    """
    if not isinstance(num_pairs, int) or num_pairs < 1:
        raise ValueError(f"`num_pairs` must be a positive int, got {num_pairs!r}.")

    def couple(key: Array, x0: Array, x1: Array, labels: Array | None = None) -> tuple[Array, Array]:
        if x1.shape[0] < num_pairs:
            raise ValueError(f"pool of {x1.shape[0]} rows is smaller than num_pairs={num_pairs}.")
        kb, ks = jax.random.split(key)
        i0, i1 = base(kb, x0, x1, labels=labels)
        keep = jax.random.permutation(ks, i1.shape[0])[:num_pairs]
        return i0[keep], i1[keep]

    return couple


def _like_leading_sharding(a: Array, ref: Array) -> Array:
    """Give ``a`` the leading-axis sharding of ``ref`` under explicit-sharding meshes (else no-op)."""
    try:
        sharding = jax.typeof(ref).sharding
        lead = sharding.spec[0] if len(sharding.spec) else None
    except (AttributeError, TypeError):
        return a
    if lead is None or sharding.mesh.empty:
        return a
    from jax.sharding import NamedSharding, PartitionSpec as P

    return jax.sharding.reshard(a, NamedSharding(sharding.mesh, P(lead)))


def shard_local(base: Coupling, num_shards: int) -> Coupling:
    """Run ``base`` independently on each of ``num_shards`` contiguous blocks of the batch.

    With the batch sharded over ``num_shards`` devices along its leading axis, this is the
    per-device plan of data-parallel OT-CFM: each block pairs only its own rows, nothing crosses
    blocks, and no communication is needed (the blocks are a ``vmap`` axis, which the compiler
    partitions like the batch). The returned indices are global. Results depend on the block size,
    like any minibatch OT; to pair over the gathered batch instead, call ``base`` directly.

    Same pairing (and the same per-block keys, ``fold_in(key, block)``) as :func:`per_shard` with a
    mesh of ``num_shards`` devices: ``per_shard`` spells the per-device program out with
    ``shard_map`` over a given mesh; this one needs no mesh and leaves partitioning to the compiler.
    """
    if not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"`num_shards` must be a positive int, got {num_shards!r}.")

    def couple(key: Array, x0: Array, x1: Array, labels: Array | None = None) -> tuple[Array, Array]:
        n = x1.shape[0]
        if n % num_shards:
            raise ValueError(f"batch {n} is not divisible by num_shards={num_shards}.")
        m = n // num_shards
        blocks = lambda a: a.reshape((num_shards, m) + a.shape[1:])
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num_shards))
        keys = _like_leading_sharding(keys, blocks(x1))
        if labels is None:
            i0, i1 = jax.vmap(lambda k, a, b: base(k, a, b))(keys, blocks(x0), blocks(x1))
        else:
            i0, i1 = jax.vmap(lambda k, a, b, lab: base(k, a, b, labels=lab))(keys, blocks(x0), blocks(x1), blocks(labels))
        offset = (jnp.arange(num_shards) * m)[:, None]
        return (i0 + offset).reshape(-1), (i1 + offset).reshape(-1)

    return couple

__all__ = [
    "COSTS",
    "Coupling",
    "HOST_SOLVERS",
    "OT_EXACT_SOLVERS",
    "class_conditional",
    "coupling_by_name",
    "entropic_plan",
    "gibbs_weights",
    "independent",
    "ot_entropic",
    "ot_exact",
    "ot_exact_host",
    "ot_paired_batch_fn",
    "ot_sinkhorn",
    "pair_cost",
    "per_shard",
    "pooled",
    "sample_plan",
    "shard_local",
    "sinkhorn_plan",
]
