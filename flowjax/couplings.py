"""Couplings between source and data minibatches.

A coupling is a pure function ``coupling(key, x0, x1, labels=None) -> (i0, i1)`` returning index
arrays of length ``n``: the training pairs are ``(x0[i0], x1[i1])`` (and ``labels[i1]``). Returning
indices, not arrays, keeps labels and any other per-sample data aligned.

- :func:`independent`: the product coupling (plain CFM).
- :func:`ot_exact`: minibatch optimal transport by exact assignment (Hungarian, via ott-jax /
  optax), the permutation minimising the squared distance (Tong et al. 2302.00482, Pooladian et al.
  2304.14772).
- :func:`ot_sinkhorn`: entropic OT (ott-jax Sinkhorn with regularisation ``epsilon``); pairs are
  either sampled from the plan (``sample=True``, as torchcfm) or taken as the row-wise argmax.
- :func:`class_conditional`: wraps an OT coupling so that pairs never cross labels.

All are jit-compatible. Under data sharding, :func:`per_shard` runs a coupling on each shard
independently (pairing within the shard, as every multi-device OT-CFM implementation does).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array
from ott.geometry import pointcloud
from ott.solvers import linear as ott_linear
from ott.tools import unreg

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


def ot_exact() -> Coupling:
    """Exact minibatch OT: the assignment minimising ``sum_i |x0[i0_i] - x1[i]|^2``."""

    def couple(key: Array, x0: Array, x1: Array, labels: Array | None = None) -> tuple[Array, Array]:
        _check_pair(x0, x1)
        cost = _cost_matrix(x0, x1, labels)
        if labels is not None:
            cost = cost + _LARGE_COST * (labels[:, None] != labels[None, :])
        from ott.geometry import geometry

        with jax.numpy_rank_promotion("allow"):  # ott-jax internals rely on implicit promotion
            _, out = unreg.hungarian(geometry.Geometry(cost_matrix=cost))
        rows, cols = out.paired_indices
        # Reorder so that the data side stays in its original order.
        i0 = jnp.zeros_like(rows).at[cols].set(rows)
        return i0, jnp.arange(x1.shape[0])

    return couple


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
    ``fold_in(key, shard_index)``. ``check_vma=False`` because the solvers' while loops carry
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


__all__ = [
    "Coupling",
    "class_conditional",
    "coupling_by_name",
    "independent",
    "ot_exact",
    "ot_sinkhorn",
    "per_shard",
    "sinkhorn_plan",
]
