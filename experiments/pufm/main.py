"""pufm experiment: (i) stage 1 + uniform, (ii) + stage 2, (iii) + adaptive schedule, (iv) + projection."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.pufm.config import CLAIM
from flowjax import experiment, metrics_3d
from flowjax.data import make_batch_fn
from flowjax.data.surfaces import SHAPES, TORUS_R, TORUS_r, make_upsampling_dataset
from flowjax.nets import init_params
from flowjax.structured import pointcloud as pc
from flowjax.structured.nets import PointNetField


def _p2f(x, rotation, shape_id):
    """Exact P2F per instance (sphere, torus); NaN for the other shapes."""
    local = np.einsum("nqd,nde->nqe", np.asarray(x), np.asarray(rotation))  # x R = R^T x
    out = np.full(len(local), np.nan)
    for i, (p, s) in enumerate(zip(local, shape_id)):
        if SHAPES[s] == "sphere":
            out[i] = float(metrics_3d.point_to_surface(p, metrics_3d.sphere_distance))
        elif SHAPES[s] == "torus":
            out[i] = float(metrics_3d.point_to_surface(p, lambda z: metrics_3d.torus_distance(z, major=TORUS_R, minor=TORUS_r)))
    return out


def run(cfg, out_dir: Path) -> dict:
    rate = cfg.dense // cfg.sparse
    train = make_upsampling_dataset(cfg.seed, cfg.num_train, dense=cfg.dense, sparse=cfg.sparse)
    test = make_upsampling_dataset(cfg.seed + 10_000, cfg.num_test, dense=cfg.dense, sparse=cfg.sparse)
    mid = jax.jit(jax.vmap(lambda s: pc.midpoint_interpolation(s, rate)))
    x0_tr = np.asarray(mid(jnp.asarray(train["sparse"], jnp.float32)))
    x0_te = mid(jnp.asarray(test["sparse"], jnp.float32))
    # exact assignment once per training instance on the noise-free interpolation (spec's flagged simplification)
    x1_tr = np.stack([d[pc.assignment(a, d)] for a, d in zip(x0_tr, train["dense"])]).astype(np.float32)
    data = {"x": jnp.asarray(x1_tr), "c": jnp.asarray(x0_tr)}
    net = PointNetField(width=cfg.width, blocks=cfg.blocks)
    params = init_params(net, jax.random.key(cfg.seed), data["x"][:2])

    def loss1(fn, key, x1, c):
        return pc.stage1_loss(fn, key, x1, x0=c, sigma0=cfg.sigma0, reduction="mean")

    def loss2(fn, key, x1, c):
        return pc.stage2_loss(fn, key, x1, x0=c, sigma0=cfg.sigma0, reduction="mean")

    bf = make_batch_fn(data, cfg.batch_size, seed=cfg.seed)
    common = dict(batch_fn=bf, seed=cfg.seed, ema_decay=None, log_every=50)
    p1, h1 = experiment.train_net(net, loss1, params, steps=cfg.stage1_steps, learning_rate=cfg.lr1, **common)
    p_i, h_i = experiment.train_net(net, loss1, p1, steps=cfg.extra_steps, learning_rate=cfg.lr1, **common)
    p_ii, h_ii = experiment.train_net(net, loss2, p1, steps=cfg.extra_steps, learning_rate=cfg.lr2, **common)

    # stage 3: per-t loss of the final model on training pairs, t_k = k/(K-1)
    grid = jnp.linspace(0.0, 1.0, cfg.loss_grid)
    v2 = experiment.bind(net, p_ii)
    xs0, xs1 = data["c"][:64], data["x"][:64]

    @jax.jit
    def loss_at(t):
        noise = cfg.sigma0 * jax.random.normal(jax.random.key(3), xs0.shape)
        x0n = xs0 + noise
        xt = (1 - t) * x0n + t * xs1
        return jnp.mean((v2(xt, jnp.full((xs0.shape[0],), t)) - (xs1 - x0n)) ** 2)

    ell = jnp.stack([loss_at(t) for t in grid])
    sched = pc.adaptive_schedule(ell, grid, cfg.sample_steps)
    uniform = jnp.linspace(0.0, 1.0, cfg.sample_steps + 1)

    runs = {
        "i_stage1_uniform": (p_i, uniform, False),
        "ii_stage2_uniform": (p_ii, uniform, False),
        "iii_stage2_adaptive": (p_ii, sched, False),
        "iv_full": (p_ii, sched, True),
    }
    dense_te = jnp.asarray(test["dense"], jnp.float32)
    m = {}
    outs = {"input_mid": x0_te}
    for name, (p, times, proj) in runs.items():
        v = experiment.bind(net, p)
        outs[name] = jax.jit(lambda x, v=v, times=times, proj=proj: pc.sample(v, x, times, proxy=x if proj else None, eta=cfg.eta))(x0_te)
    for name, x in outs.items():
        m[f"cd_e4_{name}"] = float(jnp.mean(metrics_3d.chamfer(x, dense_te))) * 1e4
        m[f"hd_e3_{name}"] = float(jnp.mean(metrics_3d.hausdorff(x, dense_te))) * 1e3
        m[f"p2f_e3_{name}"] = float(np.nanmean(_p2f(x, test["rotation"], test["shape"]))) * 1e3
    for j, t in enumerate(np.asarray(sched)):
        m[f"schedule_t{j}"] = float(t)
    names = list(runs)
    cd = [m[f"cd_e4_{n}"] for n in names]
    checks = {
        "CD(iv)<=0.9CD(i)": cd[3] <= 0.9 * cd[0],
        "P2F(iv)<=0.8P2F(i)": m["p2f_e3_iv_full"] <= 0.8 * m["p2f_e3_i_stage1_uniform"],
        "monotone_within_3pct": all(cd[k + 1] <= 1.03 * cd[k] for k in range(3)),
        "all_beat_input": all(m[f"cd_e4_{n}"] < m["cd_e4_input_mid"] and m[f"p2f_e3_{n}"] < m["p2f_e3_input_mid"] for n in names),
    }
    plots = [
        experiment.plot_curves(out_dir / "loss_vs_t.png", {"l(t)": (list(np.asarray(grid)), list(np.asarray(ell)))}, xlabel="t", ylabel="per-t velocity loss"),
        experiment.plot_loss_curves(out_dir / "loss.png", {"stage1": h1, "stage1+": h_i, "stage2": h_ii}),
    ]
    return {
        "claim": CLAIM,
        "passed": bool(all(checks.values())),
        "metrics": m,
        "baseline": {"name": "(i) stage 1 only + uniform schedule; input mid(P_s)", "cd_e4": cd[0], "cd_e4_input": m["cd_e4_input_mid"]},
        "plots": plots,
        "notes": (f"checks {checks}; schedule {np.round(np.asarray(sched), 4).tolist()} (first boundary below 0.5: "
                  f"{bool(sched[1] < 0.5)}); CD = half-sum of mean squared NN distances (x1e4), HD Euclidean (x1e3), "
                  "P2F exact on sphere/torus test instances (x1e3). Net: PointNetField (ours)."),
    }
