"""Sharding: one code path from 1 CPU to a pod.

The mesh has three named axes, ``("data", "fsdp", "tensor")``; a size-1 axis costs nothing, so
the same code runs on one device (mesh ``1x1x1``), on 8 fake CPU devices and on a TPU pod.
Arrays carry *logical* axis names (``batch``, ``embed``, ``heads`` ...) that a rules table maps
to mesh axes. Parameters without logical names are sharded by a shape rule: with ``fsdp > 1`` the
largest axis divisible by the ``fsdp`` size is split over ``fsdp`` (ZeRO-3 / FSDP style), all
other parameters are replicated. The batch is split over ``("data", "fsdp")`` along its leading
axis.

Everything is built from public JAX: ``jax.make_mesh`` (with ``AxisType.Auto`` so that XLA
propagates shardings through the step), ``NamedSharding``, ``jax.jit`` with in/out shardings,
and ``jax.make_array_from_process_local_data`` to assemble a global batch from per-host pieces.

Multi-host: call :func:`initialize_distributed` once at program start on every host (it wraps
``jax.distributed.initialize()``); each host's ``batch_fn`` then returns its *local* slice of the
global batch and :func:`shard_batch` assembles the global array. Only process 0 logs
(:func:`is_main_process`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical axis name -> mesh axis (or tuple of mesh axes, or None for replicated).
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("length", None),
    ("channels", None),
)


def make_mesh(
    data: int | None = None,
    fsdp: int = 1,
    tensor: int = 1,
    *,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A ``("data", "fsdp", "tensor")`` mesh with ``Auto`` axis types.

    Args:
      data: size of the data-parallel axis; ``None`` uses all devices left after ``fsdp`` and
        ``tensor``.
      fsdp: size of the fully-sharded-data-parallel axis (parameters split over it).
      tensor: size of the tensor-parallel axis (used only by logical-axis rules).
      devices: devices to use (default: ``jax.devices()``).

    Raises:
      ValueError: if the sizes do not multiply to the number of devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    for name, v in (("fsdp", fsdp), ("tensor", tensor)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {v!r}.")
    if data is None:
        if n % (fsdp * tensor):
            raise ValueError(
                f"`fsdp` * `tensor` = {fsdp * tensor} must divide the number of devices ({n})."
            )
        data = n // (fsdp * tensor)
    elif not isinstance(data, (int, np.integer)) or isinstance(data, bool) or data < 1:
        raise ValueError(f"`data` must be a positive integer or None, got {data!r}.")
    if data * fsdp * tensor != n:
        raise ValueError(
            f"mesh shape data*fsdp*tensor = {data}*{fsdp}*{tensor} = {data * fsdp * tensor} must equal "
            f"the number of devices ({n})."
        )
    return jax.make_mesh(
        (data, fsdp, tensor), MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices
    )


def single_device_mesh() -> Mesh:
    """A ``1x1x1`` mesh on the first device: the unsharded special case of the same code path."""
    return make_mesh(1, 1, 1, devices=jax.devices()[:1])


def _axis_size(mesh: Mesh, axes: Any) -> int:
    if axes is None:
        return 1
    if isinstance(axes, str):
        axes = (axes,)
    return math.prod(mesh.shape[a] for a in axes)


def logical_to_spec(
    logical_axes: Sequence[str | None], rules: Sequence[tuple[str, Any]] = DEFAULT_RULES
) -> PartitionSpec:
    """Map logical axis names (one per array dimension) to a ``PartitionSpec`` via ``rules``.

    A mesh axis is used at most once per array (the first logical axis that claims it wins);
    unknown logical names raise so that a typo does not silently replicate a large array.
    """
    table = dict(rules)
    used: set[str] = set()
    out = []
    for name in logical_axes:
        if name is None:
            out.append(None)
            continue
        if name not in table:
            raise ValueError(f"logical axis {name!r} has no rule; known: {sorted(table)}.")
        target = table[name]
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if a not in used)
        used.update(axes)
        out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*out)


def fsdp_spec(shape: Sequence[int], mesh: Mesh, *, min_size: int = 0) -> PartitionSpec:
    """Shard the largest axis divisible by the ``fsdp`` size over ``fsdp``; else replicate.

    Arrays with fewer than ``min_size`` elements stay replicated (small biases are cheaper
    replicated than gathered).
    """
    n = mesh.shape.get("fsdp", 1)
    shape = tuple(shape)
    if n == 1 or not shape or math.prod(shape) < min_size:
        return PartitionSpec()
    candidates = [(d, i) for i, d in enumerate(shape) if d % n == 0 and d >= n]
    if not candidates:
        return PartitionSpec()
    _, axis = max(candidates, key=lambda c: (c[0], -c[1]))
    spec = [None] * len(shape)
    spec[axis] = "fsdp"
    return PartitionSpec(*spec)


def state_sharding(
    state: Any,
    mesh: Mesh,
    *,
    logical_axes: Any = None,
    rules: Sequence[tuple[str, Any]] = DEFAULT_RULES,
    min_size: int = 0,
) -> Any:
    """A pytree of ``NamedSharding`` for a train state (or any pytree of arrays).

    Leaves are sharded with :func:`fsdp_spec` (optimizer moments share their parameter's shape and
    therefore its sharding). If ``logical_axes`` is given it must be a pytree with the structure of
    ``state.params`` whose leaves are tuples of logical names; those parameters and their EMA use
    :func:`logical_to_spec` instead.
    """

    def by_shape(x):
        return NamedSharding(mesh, fsdp_spec(np.shape(x), mesh, min_size=min_size))

    shardings = jax.tree.map(by_shape, state)
    if logical_axes is None:
        return shardings
    is_axes = lambda a: isinstance(a, tuple) and all(isinstance(n, (str, type(None))) for n in a)
    named = jax.tree.map(lambda a: NamedSharding(mesh, logical_to_spec(a, rules)), logical_axes, is_leaf=is_axes)
    if not hasattr(shardings, "params"):
        return named
    return shardings.replace(params=named, ema_params=named)


def shard_state(state: Any, mesh: Mesh, **kwargs: Any) -> Any:
    """Place a state on ``mesh`` with :func:`state_sharding` (a no-op copy on a 1-device mesh)."""
    return jax.device_put(state, state_sharding(state, mesh, **kwargs))


def batch_sharding(mesh: Mesh, *, stacked: bool = False) -> NamedSharding:
    """Leading (batch) axis split over ``("data", "fsdp")``; with ``stacked`` a leading step axis first."""
    spec = PartitionSpec(None, BATCH_AXES) if stacked else PartitionSpec(BATCH_AXES)
    return NamedSharding(mesh, spec)


def check_batch_divisible(batch: Any, mesh: Mesh, *, stacked: bool = False, local: bool = True) -> None:
    """Raise a clear error if a batch leaf's batch axis cannot be split over the mesh."""
    n = _axis_size(mesh, BATCH_AXES)
    if local:
        n = max(1, n // jax.process_count())
    axis = 1 if stacked else 0
    for path, x in jax.tree_util.tree_flatten_with_path(batch)[0]:
        shape = np.shape(x)
        name = "batch" + jax.tree_util.keystr(path)
        if len(shape) <= axis:
            raise ValueError(
                f"`{name}` must have a batch axis (axis {axis}) to shard over the mesh, got shape {shape}."
            )
        if shape[axis] % n:
            raise ValueError(
                f"`{name}` has batch size {shape[axis]} (axis {axis}), which is not divisible by the "
                f"{n} devices of the mesh's data*fsdp axes {dict(mesh.shape)}."
            )


def shard_batch(batch: Any, mesh: Mesh, *, stacked: bool = False) -> Any:
    """Assemble global, batch-sharded arrays from this process's local batch.

    On one process this is a ``device_put`` with the batch sharding; on several, each process
    passes its own slice and ``jax.make_array_from_process_local_data`` builds the global array
    (global batch = local batch x process count).
    """
    check_batch_divisible(batch, mesh, stacked=stacked)
    sharding = batch_sharding(mesh, stacked=stacked)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def initialize_distributed(**kwargs: Any) -> None:
    """Start multi-host JAX (``jax.distributed.initialize``) once; a no-op when already started.

    On Cloud TPU VMs and SLURM the coordinator is discovered automatically; elsewhere pass
    ``coordinator_address``, ``num_processes`` and ``process_id``.
    """
    try:
        jax.distributed.initialize(**kwargs)
    except RuntimeError as e:  # already initialised
        if "already" not in str(e).lower():
            raise


def is_main_process() -> bool:
    """True on process 0: the only process that logs and writes metrics."""
    return jax.process_index() == 0
