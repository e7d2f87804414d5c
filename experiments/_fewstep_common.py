"""Pieces shared by the few-step experiments (meanflow, splitmeanflow, flowmaps, snapflow, bifm).

Not an experiment (no config.py): data references, the sliced-W2 of the specs, model builders,
k-NFE samplers for flow-map and flow-matching models, and a steady-state seconds-per-step timer.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import experiment, losses, samplers
from flowjax.data import sample_toy2d, toy2d_raw_scale
from flowjax.metrics import sliced_wasserstein
from flowjax.nets import MLP, init_params


def sw2(a: jax.Array, b: jax.Array, *, num_projections: int = 256, seed: int = 0) -> float:
    """Sliced W2 as the specs define it, ``sqrt(mean_w mean_i (sort(a.w)_i - sort(b.w)_i)^2)`` over
    ``num_projections`` fixed unit directions (drawn from ``key(seed)``), via :mod:`flowjax.metrics`."""
    a = jnp.asarray(a, jnp.float32).reshape(a.shape[0], -1)
    b = jnp.asarray(b, jnp.float32).reshape(b.shape[0], -1)
    return float(sliced_wasserstein(a, b, key=jax.random.key(seed), num_projections=num_projections))


def stratified_reference(name: str, key: jax.Array, n: int) -> jax.Array:
    """A data reference with equal counts per ring mode (8gaussians) / checkerboard cell, which
    halves the data-vs-data SW2 floor (splitmeanflow.md sec. 5). Other sets: a plain draw."""
    pts = np.asarray(sample_toy2d(name, key, 4 * n))
    if name == "8gaussians":
        groups = np.mod(np.round(np.arctan2(pts[:, 1], pts[:, 0]) / (np.pi / 4)), 8).astype(int)
        g = 8
    elif name == "checkerboard":
        raw = pts * toy2d_raw_scale(name) + 2.0
        cell = np.clip(np.floor(raw), 0, 3).astype(int)
        groups = cell[:, 0] * 4 + cell[:, 1]
        g = 16
    else:
        return jnp.asarray(pts[:n])
    present = np.unique(groups)
    per = n // len(present)
    chosen = np.concatenate([np.flatnonzero(groups == k)[:per] for k in present])
    if chosen.shape[0] < n:  # top up (n not divisible by the number of groups)
        rest = np.setdiff1d(np.arange(pts.shape[0]), chosen)[: n - chosen.shape[0]]
        chosen = np.concatenate([chosen, rest])
    del g
    return jnp.asarray(pts[chosen])


def make_u_net(hidden: int, depth: int, time_dim: int, **kw: Any) -> MLP:
    """MLP average velocity ``u(x, s, t)`` embedding ``t`` and ``t - s`` (MeanFlow's pair, summed)."""
    return MLP(hidden=hidden, depth=depth, time_dim=time_dim, two_times=True, time_mode="t_dt", **kw)


def fm_loss(u_fn: Callable, key: jax.Array, x1: jax.Array, **kw: Any):
    """Plain flow matching on the diagonal ``u(x, t, t)`` (the FM baseline with the same net)."""
    return losses.cfm(lambda x, t, **c: u_fn(x, t, t, **c), key, x1, **kw)


def diagonal(u_fn: Callable) -> Callable:
    """``u'(x, s, t) = u(x, s, s)``: the k-step flow-map sampler of ``u'`` is Euler on ``v = u(., t, t)``."""
    return lambda x, s, t, **c: u_fn(x, s, s, **c)


def sample_k(u_fn: Callable, x0: jax.Array, k: int, *, euler: bool = False, c: Any = None) -> jax.Array:
    """k-NFE generation on the uniform grid: flow-map steps, or Euler steps of the diagonal."""
    fn = diagonal(u_fn) if euler else u_fn
    run = jax.jit(lambda x, cc: samplers.flowmap(fn, x, samplers.uniform_grid(k), c=cc))
    return run(x0, c)


def seconds_per_step(net, loss, params, batch: jax.Array, *, reps: int = 20, **loss_kwargs: Any) -> float:
    """Steady-state wall time of one jitted value-and-grad of ``loss`` (compile excluded)."""

    def objective(p, key):
        return loss(experiment.bind(net, p), key, batch, **loss_kwargs)[0]

    step = jax.jit(jax.value_and_grad(objective))
    jax.block_until_ready(step(params, jax.random.key(0)))
    start = time.perf_counter()
    for i in range(reps):
        out = step(params, jax.random.key(i + 1))
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / reps


def train(net, loss, *, dataset: str | Callable, cfg, seed: int, lr_schedule: str = "constant",
          params: Any = None, steps: int | None = None, **loss_kwargs: Any):
    """Train ``net`` on toy data with the shared loop; returns (EMA params, history, seconds).

    ``dataset`` is a toy-2D name or a sampler ``(key, n) -> batch``; ``lr_schedule`` is
    ``"constant"`` or ``"cosine"`` (cosine decay to 0.1 x the learning rate); ``params`` continues
    from given parameters (fine-tuning).
    """
    from functools import partial

    import optax

    from flowjax.data import make_sampler_batch_fn

    steps = cfg.steps if steps is None else steps
    sample_fn = partial(sample_toy2d, dataset) if isinstance(dataset, str) else dataset
    batch_fn = make_sampler_batch_fn(sample_fn, cfg.batch_size, seed=seed)
    if params is None:
        example = sample_fn(jax.random.key(0), 2)
        x_ex = example["x"] if isinstance(example, dict) else example
        c_ex = example.get("c") if isinstance(example, dict) else None
        params = init_params(net, jax.random.key(seed), x_ex, c=c_ex)
    lr = cfg.learning_rate
    if lr_schedule == "cosine":
        lr = optax.cosine_decay_schedule(cfg.learning_rate, max(steps, 1), alpha=0.1)
    start = time.perf_counter()
    params, hist = experiment.train_net(
        net, loss, params, batch_fn=batch_fn, steps=steps, seed=seed, learning_rate=lr,
        ema_decay=cfg.ema_decay, log_every=max(1, steps // 20), **loss_kwargs,
    )
    return params, hist, time.perf_counter() - start


def finite(x: float) -> bool:
    return math.isfinite(float(x))


# --------------------------------------------------------------------------------------------
# The 2D few-step benchmark of splitmeanflow.md sec. 5 (used by the meanflow and splitmeanflow
# experiments): train models with the same net/steps/seed, sample k NFE from the same noises.
# --------------------------------------------------------------------------------------------
def model_table(cfg) -> dict[str, tuple[Callable, dict, bool]]:
    """name -> (loss, loss kwargs, euler_sampling)."""
    return {
        "fm": (fm_loss, {}, True),
        "meanflow": (losses.meanflow, dict(
            time_sampler=losses.meanflow_time_pairs(cfg.mf_mean, cfg.mf_std, fm_fraction=cfg.mf_fm_fraction),
            norm_p=cfg.mf_norm_p, norm_eps=cfg.mf_norm_eps), False),
        "splitmeanflow": (losses.splitmeanflow, dict(fm_fraction=cfg.smf_fm_fraction), False),
        "smf_interpolant": (losses.splitmeanflow, dict(fm_fraction=cfg.smf_fm_fraction, inner_point="interpolant"), False),
    }


def run_toy_benchmark(cfg, out_dir, models: tuple[str, ...]) -> tuple[dict, dict, list]:
    """Train ``models`` on each of ``cfg.datasets``; return (metrics, histories, plots)."""
    net = make_u_net(cfg.hidden, cfg.depth, cfg.time_dim, time_scale=cfg.get("time_scale", 1.0))
    table = model_table(cfg)
    metrics: dict[str, float] = {}
    histories: dict[str, list] = {}
    plots: list[str] = []
    x0 = jax.random.normal(jax.random.key(20_000), (cfg.eval_samples, 2), jnp.float32)
    for ds in cfg.datasets:
        ref = stratified_reference(ds, jax.random.key(10_000), cfg.eval_samples)
        metrics[f"{ds}/data_floor"] = sw2(stratified_reference(ds, jax.random.key(10_001), cfg.eval_samples), ref)
        panels = {"data": ref}
        curves = {}
        for name in models:
            loss, kw, euler = table[name]
            params, hist, secs = train(net, loss, dataset=ds, cfg=cfg, seed=cfg.seed, **kw)
            histories[f"{ds}/{name}"] = hist
            metrics[f"{ds}/{name}/train_seconds"] = secs
            u = experiment.bind(net, params)
            ys = []
            for k in cfg.nfe:
                xk = sample_k(u, x0, k, euler=euler)
                metrics[f"{ds}/{name}/sw2_nfe{k}"] = sw2(xk, ref)
                ys.append(metrics[f"{ds}/{name}/sw2_nfe{k}"])
                if k == 1 or (euler and k == max(cfg.nfe)):
                    panels[f"{name} {k} NFE"] = xk
            curves[name] = (list(cfg.nfe), ys)
            if name == "fm":
                xr = sample_k(u, x0, cfg.ref_steps, euler=True)
                metrics[f"{ds}/R_fm_euler{cfg.ref_steps}"] = sw2(xr, ref)
                panels[f"fm {cfg.ref_steps} Euler"] = xr
        plots.append(experiment.plot_samples_2d(out_dir / f"samples_{ds}.png", panels, lim=3.0, title=ds))
        plots.append(experiment.plot_curves(out_dir / f"sw2_vs_nfe_{ds}.png", curves, xlabel="NFE",
                                            ylabel="sliced W2 to data", logx=True, logy=True, title=ds))
    plots.append(experiment.plot_loss_curves(out_dir / "loss.png", histories))
    return metrics, histories, plots


def time_losses(cfg, names: tuple[str, ...]) -> dict[str, float]:
    """Steady-state seconds per training step (value and gradient) of each loss, same net and batch."""
    net = make_u_net(cfg.hidden, cfg.depth, cfg.time_dim, time_scale=cfg.get("time_scale", 1.0))
    params = init_params(net, jax.random.key(0), jnp.zeros((2, 2), jnp.float32))
    batch = sample_toy2d(cfg.datasets[0], jax.random.key(1), cfg.batch_size)
    table = model_table(cfg)
    return {f"seconds_per_step/{n}": seconds_per_step(net, table[n][0], params, batch, reps=cfg.timing_reps, **table[n][1])
            for n in names}
