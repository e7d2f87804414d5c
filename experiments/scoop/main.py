"""scoop experiment: (a) NN flow, (b) SCOOP w/o refinement, (c) refinement only, (d) SCOOP full."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp

from experiments.scoop.config import CLAIM
from flowjax import experiment, metrics_3d
from flowjax import nets
from flowjax.data import make_batch_fn
from flowjax.data.sceneflow import make_scene_flow_dataset
from flowjax.structured import sceneflow as sf


def run(cfg, out_dir: Path) -> dict:
    kw = dict(n=cfg.points, nonrigid=cfg.nonrigid)
    train = make_scene_flow_dataset(cfg.seed, cfg.num_train, **kw)
    test = make_scene_flow_dataset(cfg.seed + 10_000, cfg.num_test, **kw)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    data = {"x": f32(train.source), "c": f32(train.target)}
    net = sf.SetConvFeatures(widths=tuple(cfg.widths), k=cfg.k, convs=cfg.convs)
    params = nets.init_variables(net, jax.random.key(cfg.seed), data["x"][:1])
    corr = dict(num_iters=cfg.sinkhorn_iters, k_corr=cfg.k_corr)

    def loss(fn, key, x1, c):
        return sf.scoop_loss(fn, key, x1, target=c, lambda_conf=cfg.lambda_conf, lambda_smooth=cfg.lambda_smooth,
                             k_smooth=cfg.k_smooth_train, **corr)

    params, hist = experiment.train_net(
        net, loss, params, batch_fn=make_batch_fn(data, cfg.batch_size, seed=cfg.seed), steps=cfg.train_steps,
        seed=cfg.seed, learning_rate=cfg.learning_rate, ema_decay=None, log_every=max(cfg.train_steps // 20, 1),
    )
    src, tgt, gt = f32(test.source), f32(test.target), f32(test.flow)
    feat = experiment.bind(net, params)
    f0, conf = jax.jit(lambda s, t: sf.scoop_correspondence(feat, s, t, **corr))(src, tgt)
    one = lambda f, s, t, c: sf.refine_flow(f, s, t, confidence=c, steps=cfg.refine_steps, learning_rate=cfg.refine_lr,
                                            lambda_smooth=cfg.refine_lambda, k_smooth=cfg.refine_k, beta=cfg.refine_beta)
    refine = jax.jit(jax.vmap(one))
    flows = {
        "a_nn": sf.nearest_neighbour_flow(src, tgt),
        "b_scoop_no_refine": f0,
        "c_refine_only": refine(jnp.zeros_like(src), src, tgt, jnp.ones_like(src[..., 0])),
        "d_scoop_full": refine(f0, src, tgt, conf),
    }
    m = {}
    for name, f in flows.items():
        for k, v in metrics_3d.scene_flow_metrics(f, gt).items():
            m[f"{k}_{name}"] = float(v)
    m["mean_confidence"] = float(jnp.mean(conf))
    m["epsilon"] = float(feat(src[:1])[1])
    checks = {
        "EPE(d)<=0.7EPE(b)": m["epe3d_d_scoop_full"] <= 0.7 * m["epe3d_b_scoop_no_refine"],
        "EPE(d)<EPE(c)": m["epe3d_d_scoop_full"] < m["epe3d_c_refine_only"],
        "AccR(d)>AccR(a)": m["acc3d_relax_d_scoop_full"] > m["acc3d_relax_a_nn"],
        "Out(d)<Out(a)": m["outliers_d_scoop_full"] < m["outliers_a_nn"],
    }
    names = list(flows)
    plots = [
        experiment.plot_loss_curves(out_dir / "loss.png", {"scoop": hist}),
        experiment.plot_curves(out_dir / "epe.png", {"EPE3D": (list(range(4)), [m[f"epe3d_{n}"] for n in names])},
                               xlabel="run (0=a NN, 1=b SCOOP no refine, 2=c refine only, 3=d full)", ylabel="EPE3D [m]"),
    ]
    return {
        "claim": CLAIM,
        "passed": bool(all(checks.values())),
        "metrics": m,
        "baseline": {"name": "NN flow (a), refinement only (c)", "epe3d_a": m["epe3d_a_nn"], "epe3d_c": m["epe3d_c_refine_only"]},
        "plots": plots,
        "notes": (f"checks {checks}; {cfg.points} points, SetConv widths {tuple(cfg.widths)} k={cfg.k} convs/layer={cfg.convs}, "
                  f"{cfg.train_steps} steps batch {cfg.batch_size}; refinement {cfg.refine_steps} Adam steps lr {cfg.refine_lr}, "
                  f"lambda {cfg.refine_lambda}, k_s {cfg.refine_k}, beta {cfg.refine_beta}."),
    }
