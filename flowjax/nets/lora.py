"""Low-rank adapters (LoRA, Hu et al. 2106.09685) over any parameter pytree.

Adapters are a separate pytree ``{path: {"a": (in, r), "b": (r, out)}}`` keyed by the
``jax.tree_util.keystr`` of each adapted 2D kernel; :func:`apply_lora` returns the merged
parameters ``W + (alpha / r) a @ b``. ``b`` starts at zero, so at initialisation the merged
parameters equal the base ones exactly. Training the adapters only (the base frozen) is a matter
of differentiating with respect to the adapter pytree, e.g.
``loss(apply_lora(base, lora), ...)`` with ``grad`` over ``lora``. Used by ArcFlow's trajectory
distillation (2602.09014: LoRA on the student backbone) and BOSS's LoRA option (2312.16414).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks

Predicate = Callable[[str, Array], bool]


def default_predicate(path: str, leaf: Array) -> bool:
    """Adapt every 2D ``kernel`` (dense layers)."""
    return leaf.ndim == 2 and path.endswith("['kernel']")


def init_lora(key: Array, params: Any, *, rank: int = 4, predicate: Predicate | None = None) -> dict[str, dict[str, Array]]:
    """Adapters for the leaves of ``params`` selected by ``predicate(path_str, leaf)``.

    ``a ~ N(0, 1/in)``, ``b = 0`` (the LoRA initialisation). A kernel smaller than ``rank`` in
    either dimension gets rank ``min(in, out)``.
    """
    _checks.check_positive_int("rank", rank)
    predicate = predicate or default_predicate
    out = {}
    leaves = jax.tree_util.tree_leaves_with_path(params)
    for i, (path, leaf) in enumerate(leaves):
        name = jax.tree_util.keystr(path)
        if predicate(name, leaf):
            fan_in, fan_out = leaf.shape
            r = min(rank, fan_in, fan_out)
            a = jax.random.normal(jax.random.fold_in(key, i), (fan_in, r), leaf.dtype) / jnp.sqrt(fan_in)
            out[name] = {"a": a, "b": jnp.zeros((r, fan_out), leaf.dtype)}
    if not out:
        raise ValueError("no parameter matched the LoRA predicate.")
    return out


def apply_lora(params: Any, lora: dict[str, dict[str, Array]], *, alpha: float | None = None) -> Any:
    """Merged parameters ``W + (alpha / r) a @ b`` for every adapted leaf (``alpha`` defaults to ``r``)."""

    def merge(path, leaf):
        name = jax.tree_util.keystr(path)
        if name not in lora:
            return leaf
        a, b = lora[name]["a"], lora[name]["b"]
        r = a.shape[1]
        scale = 1.0 if alpha is None else alpha / r
        return leaf + scale * (a @ b)

    unknown = set(lora) - {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)}
    if unknown:
        raise ValueError(f"adapters for parameters not in the pytree: {sorted(unknown)[:3]}")
    return jax.tree_util.tree_map_with_path(merge, params)


def lora_param_count(lora: dict[str, dict[str, Array]]) -> int:
    return int(sum(x.size for x in jax.tree.leaves(lora)))


__all__ = ["apply_lora", "default_predicate", "init_lora", "lora_param_count"]
