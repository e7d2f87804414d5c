"""Helpers shared by the issue-7 experiments (wcfm, sb-cfm, kdiff, pafm, vecor, ...).

- toy samplers in the geometry the specs fix (pure JAX, so batches are drawn inside the jitted
  training loop): 8 Gaussians, sklearn-style two moons, a ring, class-conditional rings;
- ``make_seed_trainer``: the library's pure train step (``flowjax.train.make_train_step``) scanned over
  steps and ``vmap``-ed over seeds, so several seeds train in one program (bigger matmuls on CPU);
- ``euler``: fixed-step Euler with the straightness integral along the way.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flowjax.train import make_optimizer
from flowjax.train.state import create_train_state, make_train_step


# ------------------------------------------------------------------------------------------------
# toy data
# ------------------------------------------------------------------------------------------------
def eight_gaussians(key, n: int, *, radius: float = 5.0, std: float = 0.5, dtype=jnp.float32):
    kc, kn = jax.random.split(key)
    comp = jax.random.randint(kc, (n,), 0, 8)
    ang = comp.astype(dtype) * (2 * jnp.pi / 8)
    centre = radius * jnp.stack([jnp.cos(ang), jnp.sin(ang)], -1)
    return centre + std * jax.random.normal(kn, (n, 2), dtype)


def ring_gmm(key, n: int, *, radius: float = 4.0, std: float = 0.3, num: int = 8, dtype=jnp.float32, return_labels=False):
    kc, kn = jax.random.split(key)
    comp = jax.random.randint(kc, (n,), 0, num)
    ang = comp.astype(dtype) * (2 * jnp.pi / num)
    centre = radius * jnp.stack([jnp.cos(ang), jnp.sin(ang)], -1)
    x = centre + std * jax.random.normal(kn, (n, 2), dtype)
    return (x, comp) if return_labels else x


def ring_means(num: int = 8, radius: float = 4.0) -> np.ndarray:
    ang = np.arange(num) * 2 * np.pi / num
    return radius * np.stack([np.cos(ang), np.sin(ang)], -1)


def moons(key, n: int, *, noise: float = 0.2, scale: float = 1.0, shift: float = 0.0, dtype=jnp.float32, return_labels=False):
    """sklearn ``make_moons`` in distribution (angles uniform instead of a linspace), then ``scale * x + shift``.

    Label 0 is the upper moon ``(cos a, sin a)``, label 1 the lower ``(1 - cos a, 1 - sin a - 0.5)``.
    """
    ka, kl, kn = jax.random.split(key, 3)
    a = jax.random.uniform(ka, (n,), dtype) * jnp.pi
    lab = jax.random.bernoulli(kl, 0.5, (n,))
    upper = jnp.stack([jnp.cos(a), jnp.sin(a)], -1)
    lower = jnp.stack([1 - jnp.cos(a), 1 - jnp.sin(a) - 0.5], -1)
    x = jnp.where(lab[:, None], lower, upper) + noise * jax.random.normal(kn, (n, 2), dtype)
    x = scale * x + shift
    return (x, lab.astype(jnp.int32)) if return_labels else x


# ------------------------------------------------------------------------------------------------
# training: seeds in parallel
# ------------------------------------------------------------------------------------------------
def make_seed_trainer(
    init_fn: Callable[[jax.Array], Any],
    loss_fn: Callable[..., tuple[jax.Array, dict]],
    batch_fn: Callable[[jax.Array, jax.Array], Any],
    *,
    learning_rate: float = 1e-3,
    clip_norm: float | None = None,
    ema_decay: float | None = None,
    chunk: int = 250,
    hyper_per_seed: bool = False,
):
    """Build ``train(seeds, steps, hyper=None, eval_every=None, eval_fn=None)``: one model per seed,
    all seeds in one vmapped, scanned program, compiled ONCE and reused across calls.

    ``init_fn(key) -> params``; ``loss_fn(params, key, batch, hyper)`` where ``hyper`` is a pytree of
    traced hyperparameters (so runs that differ only in them share the compiled program);
    ``batch_fn(seed_key, step) -> batch`` (pure). ``train`` returns ``(params, losses, evals)``:
    params stacked over seeds (EMA if ``ema_decay``), chunk-mean losses ``(seeds, chunks)``, and
    ``[(step, eval_fn(params))]`` every ``eval_every`` steps. With ``hyper_per_seed`` every leaf of
    ``hyper`` has a leading axis of length ``len(seeds)`` (one setting per lane, e.g. one method
    per lane trained side by side).
    """
    opt = make_optimizer(learning_rate, clip_norm=clip_norm)

    def init_one(k):
        k = jax.random.wrap_key_data(k)
        return create_train_state(init_fn(jax.random.fold_in(k, 1)), opt, jax.random.fold_in(k, 2))

    init_all = jax.jit(jax.vmap(init_one))

    def run(states, keys, hyper, n):
        def one(state, k, h):
            step_fn = make_train_step(lambda p, kk, b: loss_fn(p, kk, b, h), opt, ema_decay=ema_decay)
            data_key = jax.random.fold_in(jax.random.wrap_key_data(k), 3)

            def body(st, _):
                st, m = step_fn(st, batch_fn(data_key, st.step))
                return st, m["loss"]

            st, losses = jax.lax.scan(body, state, None, length=n)
            return st, jnp.mean(losses)

        return jax.vmap(one, in_axes=(0, 0, 0 if hyper_per_seed else None))(states, keys, hyper)

    run = jax.jit(run, static_argnums=3)

    def train(seeds: Sequence[int], steps: int, hyper: Any = None, *, eval_every: int | None = None,
              eval_fn: Callable[[Any], Any] | None = None):
        keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in seeds])
        states = init_all(keys)
        losses, evals = [], []
        every = eval_every or steps
        done = 0
        while done < steps:
            n = min(chunk, steps - done, every - done % every)
            states, l = run(states, keys, hyper, n)
            losses.append(np.asarray(l))
            done += n
            if eval_fn is not None and done % every == 0:
                evals.append((done, eval_fn(states.ema_params if ema_decay else states.params)))
        params = states.ema_params if ema_decay else states.params
        return params, np.stack(losses, 1), evals

    return train


def seed_slice(params, i: int):
    return jax.tree.map(lambda a: a[i], params)


# ------------------------------------------------------------------------------------------------
# sampling
# ------------------------------------------------------------------------------------------------
def euler(v: Callable[[jax.Array, jax.Array], jax.Array], x0: jax.Array, steps: int, *, straightness: bool = False,
          t0: float = 0.0, t1: float = 1.0):
    """Euler from t0 to t1. With ``straightness``, also ``S = mean_x sum_k dt ||v_k - (X_1 - X_0)||^2``."""
    dt = (t1 - t0) / steps

    def body(x, k):
        t = jnp.full((x.shape[0],), t0 + k * dt, x.dtype)
        vk = v(x, t)
        return x + dt * vk, vk

    x1, vs = jax.lax.scan(body, x0, jnp.arange(steps))
    if not straightness:
        return x1
    chord = (x1 - x0) / (t1 - t0)
    s = jnp.mean(jnp.sum(jnp.sum((vs - chord[None]) ** 2, -1), 0) * dt)
    return x1, s
