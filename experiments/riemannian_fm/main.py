"""riemannian-fm experiment: RFM on S^2 against a vMF mixture with a known density."""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.riemannian_fm.config import CLAIM
from flowjax import experiment, losses, metrics, riemannian
from flowjax.data import make_sampler_batch_fn
from flowjax.nets import MLP, init_params

S2 = riemannian.sphere(2)


def mixture_means(k: int) -> jax.Array:
    """Fixed, well-separated unit means (vertices of a tetrahedron-like set, then the first k)."""
    m = jnp.array([[0.0, 0.0, 1.0], [0.94, 0.0, -0.33], [-0.47, 0.82, -0.33], [-0.47, -0.82, -0.33],
                   [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])[:k]
    return m / jnp.linalg.norm(m, axis=-1, keepdims=True)


def sample_vmf_s2(key: jax.Array, mu: jax.Array, kappa: jax.Array) -> jax.Array:
    """Exact vMF sampling on S^2 (inverse CDF of w = <mu, x>): rows of mu (n, 3), kappa (n,)."""
    ku, kv = jax.random.split(key)
    u = jax.random.uniform(ku, kappa.shape, minval=1e-12, maxval=1.0)
    w = 1.0 + jnp.log(u + (1.0 - u) * jnp.exp(-2.0 * kappa)) / kappa
    g = jax.random.normal(kv, mu.shape)
    e = g - jnp.sum(g * mu, -1, keepdims=True) * mu
    e = e / jnp.linalg.norm(e, axis=-1, keepdims=True)
    return w[:, None] * mu + jnp.sqrt(jnp.clip(1.0 - w**2, 0.0))[:, None] * e


def make_mixture(kappas):
    kap = jnp.asarray(kappas, jnp.float32)
    mus = mixture_means(len(kappas))

    def sample(key, n):
        kc, kx = jax.random.split(key)
        comp = jax.random.randint(kc, (n,), 0, len(kappas))
        return sample_vmf_s2(kx, mus[comp], kap[comp])

    def log_prob(x):
        # log C(kappa) = log kappa - log(2 pi) - kappa - log(1 - exp(-2 kappa)); equal weights.
        logc = jnp.log(kap) - math.log(2 * math.pi) - kap - jnp.log1p(-jnp.exp(-2 * kap))
        return jax.nn.logsumexp(logc[None] + kap[None] * (x @ mus.T), axis=-1) - math.log(len(kappas))

    return sample, log_prob


def fibonacci_sphere(n: int) -> jax.Array:
    i = jnp.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = jnp.pi * (3.0 - jnp.sqrt(5.0)) * i
    r = jnp.sqrt(1.0 - z**2)
    return jnp.stack([r * jnp.cos(phi), r * jnp.sin(phi), z], -1)


def kde_tv(samples: jax.Array, log_prob, *, kappa: float, grid: jax.Array) -> float:
    """0.5 * int |p_kde - p| over S^2 on an equal-area grid; p_kde uses a vMF(kappa) kernel."""
    logc = math.log(kappa) - math.log(2 * math.pi) - kappa - math.log1p(-math.exp(-2 * kappa))
    kde = jnp.mean(jnp.exp(logc + kappa * (grid @ samples.T)), axis=-1)
    p = jnp.exp(log_prob(grid))
    return float(0.5 * jnp.sum(jnp.abs(kde - p)) * 4 * jnp.pi / grid.shape[0])


def lonlat(x: jax.Array) -> jax.Array:
    return jnp.stack([jnp.arctan2(x[:, 1], x[:, 0]), jnp.arcsin(jnp.clip(x[:, 2], -1, 1)) * 2.0], -1)


def run(cfg, out_dir: Path) -> dict:
    sample, log_prob = make_mixture(cfg.kappas)
    net = MLP(hidden=cfg.hidden, depth=cfg.depth)
    batch_fn = make_sampler_batch_fn(sample, cfg.batch_size, seed=cfg.seed)
    heldout = sample(jax.random.key(10_000), cfg.eval_samples)
    data2 = sample(jax.random.key(10_001), cfg.eval_samples)
    x0 = S2.sample_uniform(jax.random.key(20_000), cfg.eval_samples)
    params = init_params(net, jax.random.key(cfg.seed), heldout[:2])
    params, hist = experiment.train_net(
        net, losses.riemannian_cfm, params, batch_fn=batch_fn, steps=cfg.steps, seed=cfg.seed,
        learning_rate=cfg.learning_rate, manifold=S2,
    )
    v = experiment.bind(net, params)
    model = jax.jit(lambda x: riemannian.ode(v, x, S2, steps=cfg.sample_steps, solver=cfg.solver))(x0)

    grid = fibonacci_sphere(cfg.grid_points)
    bw = (0.05, 0.1, 0.2, 0.5, 1.0)
    m = {
        "mmd2_model": float(metrics.mmd(model, heldout, bandwidths=bw)),
        "mmd2_uniform": float(metrics.mmd(x0, heldout, bandwidths=bw)),
        "mmd2_data": float(metrics.mmd(data2, heldout, bandwidths=bw)),
        "kde_tv_model": kde_tv(model, log_prob, kappa=cfg.kde_kappa, grid=grid),
        "kde_tv_uniform": kde_tv(x0, log_prob, kappa=cfg.kde_kappa, grid=grid),
        "kde_tv_data": kde_tv(data2, log_prob, kappa=cfg.kde_kappa, grid=grid),
        "mean_logp_model": float(jnp.mean(log_prob(model))),
        "mean_logp_data": float(jnp.mean(log_prob(data2))),
        "mean_logp_uniform": float(jnp.mean(log_prob(x0))),
        "max_norm_error": float(jnp.max(jnp.abs(jnp.linalg.norm(model, axis=-1) - 1.0))),
        "final_loss": float(hist[-1]["loss"]),
    }
    # NLL of held-out data under the model (Riemannian change of variables) vs the true entropy.
    xs = heldout[: cfg.nll_samples]
    lp = jax.jit(lambda x: riemannian.log_likelihood(v, x, S2, steps=cfg.nll_steps))(xs)
    m["nll_model"] = float(-jnp.mean(lp))
    m["nll_true"] = float(-jnp.mean(log_prob(xs)))
    m["nll_uniform"] = S2.log_volume
    checks = [
        m["mmd2_model"] < 0.05 * m["mmd2_uniform"],
        m["kde_tv_model"] - m["kde_tv_data"] < 0.25 * (m["kde_tv_uniform"] - m["kde_tv_data"]),
        m["max_norm_error"] < 1e-5,
        m["nll_model"] - m["nll_true"] < 0.25 * (m["nll_uniform"] - m["nll_true"]),
    ]
    plots = [
        experiment.plot_samples_2d(
            out_dir / "samples_lonlat.png",
            {"data": lonlat(heldout), "RFM samples": lonlat(model), "uniform source": lonlat(x0)},
            lim=3.3, title="longitude vs 2*latitude",
        ),
        experiment.plot_loss_curves(out_dir / "loss.png", {"riemannian_cfm": hist}),
    ]
    return {
        "claim": CLAIM,
        "passed": bool(all(checks)),
        "metrics": m,
        "baseline": {"name": "uniform source (untrained)", "mmd2": m["mmd2_uniform"], "kde_tv": m["kde_tv_uniform"],
                     "data_floor_mmd2": m["mmd2_data"], "data_floor_kde_tv": m["kde_tv_data"]},
        "plots": plots,
        "notes": (f"{cfg.steps} steps, batch {cfg.batch_size}, MLP {cfg.hidden}x{cfg.depth}, {cfg.sample_steps} "
                  f"{cfg.solver} exp-map steps, kappas {tuple(cfg.kappas)}, seed {cfg.seed}; checks {checks}."),
    }
