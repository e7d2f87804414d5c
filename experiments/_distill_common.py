"""Small helpers shared by the distillation experiments (reflow, rectified-diffusion, mdt-dist,
arcflow, boss, flowturbo). Experiment glue only: training goes through :func:`flowjax.train.fit`,
metrics through :mod:`flowjax.metrics`."""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import metrics
from flowjax.experiment import bind
from flowjax.train import fit, make_optimizer


def train(loss_fn: Callable, params: Any, *, batch_fn: Callable, steps: int, seed: int, learning_rate: float,
          ema_decay: float | None = None, clip_norm: float | None = 1.0) -> tuple[Any, list[dict]]:
    """``loss_fn(params, key, batch) -> (loss, aux)`` trained with Adam; returns (params or EMA, history)."""
    params = jax.tree.map(jnp.copy, params)  # fit donates its input buffers; callers may reuse theirs
    state, hist = fit(loss_fn, params, batch_fn=batch_fn, steps=steps, key=jax.random.key(seed),
                      optimizer=make_optimizer(learning_rate, clip_norm=clip_norm), ema_decay=ema_decay,
                      log_every=max(1, min(100, steps)))
    return (state.ema_params if ema_decay is not None else state.params), hist


def model_loss(net: Any, loss: Callable, **fixed: Any) -> Callable:
    """``(params, key, batch) -> loss(bind(net, params), key, batch["x1"], **batch_rest, **fixed)``."""

    def fn(params, key, batch):
        batch = dict(batch)
        x1 = batch.pop("x1")
        return loss(bind(net, params), key, x1, **batch, **fixed)

    return fn


def sampler_batch_fn(sample: Callable[[jax.Array, int], jax.Array], batch_size: int, seed: int) -> Callable:
    base = jax.random.key(seed)
    return lambda step: {"x1": sample(jax.random.fold_in(base, step), batch_size)}


def sw2(x: jax.Array, y: jax.Array, *, num_projections: int = 256, seed: int = 1) -> float:
    """Sliced W2 with fixed random directions (same directions for every model of an experiment)."""
    return float(metrics.sliced_wasserstein(x, y, key=jax.random.key(seed), num_projections=num_projections))


def mse(x: jax.Array, y: jax.Array) -> float:
    """Mean over samples of the squared Euclidean distance."""
    return float(jnp.mean(jnp.sum((x - y).reshape(x.shape[0], -1) ** 2, axis=-1)))


def seconds_per_sample(fn: Callable[[jax.Array], jax.Array], x: jax.Array, *, repeats: int = 5) -> float:
    """Median wall-clock of a jitted ``fn(x)`` over ``repeats`` runs after warm-up, per sample."""
    jitted = jax.jit(fn)
    jax.block_until_ready(jitted(x))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(jitted(x))
        times.append(time.perf_counter() - start)
    return float(np.median(times)) / x.shape[0]


def ring_means(n_modes: int = 8, radius: float = 2.0) -> np.ndarray:
    ang = 2 * np.pi * np.arange(n_modes) / n_modes
    return radius * np.stack([np.cos(ang), np.sin(ang)], axis=1)
