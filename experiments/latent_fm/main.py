"""latent-fm experiment on 8x8 digits: pixel-space vs latent-space FM, class-conditional with CFG (part
"class") and inpainting with the masked image as the condition against replacement and pixel-space
baselines (part "inpaint"). See config.py for the claims and pass criteria."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.latent_fm.config import CLAIM, validate
from flowjax import experiment, keystreams, losses, metrics, samplers
from flowjax.data import load_digits_arrays
from flowjax.nets import MLP, ConcatConditioned, count_params, drop_labels, init_params
from flowjax.nets.autoencoder import train_autoencoder
from flowjax.samplers.latent_conditioning import (
    half_masks,
    inpainting_condition,
    latent_conditional_sample,
    latent_replacement_inpaint,
    masked_pixel_condition,
    null_inpainting_condition,
    paste_known,
)


def cfg_velocity(v_fn, *, guidance: float, null_label: int):
    """Classifier-free guidance ``v_w = v(x,t,null) + w (v(x,t,c) - v(x,t,null))`` (Ho & Salimans 2207.12598).

    w = 1 is the conditional field, w = 0 the unconditional one; linear in w.
    """

    def v(x, t, c):
        vc = v_fn(x, t, c=c)
        vu = v_fn(x, t, c=jnp.full_like(c, null_label))
        return vu + guidance * (vc - vu)

    return v


def mlp_macs(params) -> int:
    """Multiply-accumulates of one forward pass per sample: the Dense kernels' sizes (embedding look-ups excluded)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return int(sum(v.size for path, v in flat if "kernel" in jax.tree_util.keystr(path)))


def train_fm(net, x, labels, cfg, seed):
    """Class-conditional CFM with label dropout; returns (v_fn, history, seconds, seconds_per_step)."""
    c = cfg.fm
    data, labs = jnp.asarray(x), jnp.asarray(labels)
    params = init_params(net, jax.random.key(seed), data[:2], c=labs[:2])
    key = jax.random.key(seed + 100)

    def batch_fn(step):
        k1, k2 = jax.random.split(jax.random.fold_in(key, step))
        idx = jax.random.randint(k1, (c.batch_size,), 0, data.shape[0])
        return {"x": data[idx], "c": drop_labels(k2, labs[idx], c.label_dropout, 10)}

    t0 = time.perf_counter()
    params, hist = experiment.train_net(net, losses.cfm, params, batch_fn=batch_fn, steps=c.steps, seed=seed, learning_rate=c.learning_rate)
    jax.block_until_ready(params)
    secs = time.perf_counter() - t0
    return experiment.bind(net, params), params, hist, secs


def run_class(cfg, out_dir: Path, *, ae, z_train, train_x, train_y, test_x, clf) -> dict:
    """Part "class": class-conditional pixel FM vs latent FM with CFG (spec section 5, criteria 1 and 3)."""
    seed = cfg.seed

    # 2. pixel FM and latent FM, same steps/batch/optimiser
    pix_net = MLP(hidden=cfg.pixel.hidden, depth=cfg.pixel.depth, num_classes=10)
    lat_net = MLP(hidden=cfg.latent.hidden, depth=cfg.latent.depth, num_classes=10)
    v_pix, p_pix, h_pix, s_pix = train_fm(pix_net, train_x, train_y, cfg, seed)
    v_lat, p_lat, h_lat, s_lat = train_fm(lat_net, z_train, train_y, cfg, seed)

    # 3. CFG sampling, per_class samples for each of the 10 labels
    e = cfg.eval
    labels = jnp.repeat(jnp.arange(10, dtype=jnp.int32), e.per_class)
    n = labels.shape[0]
    kx = jax.random.key(seed + 7)
    x_pix = samplers.ode(cfg_velocity(v_pix, guidance=e.guidance, null_label=10), jax.random.normal(kx, (n, 8, 8, 1)),
                         solver=e.ode_solver, steps=e.ode_steps, c=labels)
    z_lat = samplers.ode(cfg_velocity(v_lat, guidance=e.guidance, null_label=10), jax.random.normal(kx, (n, cfg.ae.latent_dim)),
                         solver=e.ode_solver, steps=e.ode_steps, c=labels)
    x_lat = ae.decode(z_lat)
    x_pix, x_lat = np.clip(np.asarray(x_pix), -1, 1), np.clip(np.asarray(x_lat), -1, 1)

    macs_pix, macs_lat = mlp_macs(p_pix), mlp_macs(p_lat)
    # training MACs per step ~ 3 x forward MACs x batch for both; the AE encode of the train set is counted once
    enc_macs_once = mlp_macs(ae.params) * train_x.shape[0]  # upper bound: encoder+decoder dense/conv kernel sizes (conv MACs not spatially multiplied)
    m = {
        "fd_pixel": metrics.digits_fd(x_pix, test_x),
        "fd_latent": metrics.digits_fd(x_lat, test_x),
        "acc_pixel": clf.accuracy(x_pix, np.asarray(labels)),
        "acc_latent": clf.accuracy(x_lat, np.asarray(labels)),
        "macs_per_sample_pixel": float(macs_pix),
        "macs_per_sample_latent": float(macs_lat),
        "train_macs_ratio": float(macs_lat / macs_pix),
        "params_pixel": float(count_params(p_pix)),
        "params_latent": float(count_params(p_lat)),
        "seconds_per_step_pixel": s_pix / cfg.fm.steps,
        "seconds_per_step_latent": s_lat / cfg.fm.steps,
        "final_loss_pixel": h_pix[-1]["loss"],
        "final_loss_latent": h_lat[-1]["loss"],
    }
    m["fd_ratio_latent_over_pixel"] = m["fd_latent"] / m["fd_pixel"]
    checks = {
        "fd_latent_le_1.3x_pixel": m["fd_latent"] <= 1.3 * m["fd_pixel"],
        "train_macs_ratio_le_0.3": m["train_macs_ratio"] <= 0.3,
        "acc_pixel_ge_0.9": m["acc_pixel"] >= 0.9,
        "acc_latent_ge_0.9": m["acc_latent"] >= 0.9,
    }
    order = np.concatenate([np.arange(k * e.per_class, k * e.per_class + min(8, e.per_class)) for k in range(10)])
    plots = [
        experiment.plot_image_grid(out_dir / "samples_pixel.png", x_pix[order], nrow=min(8, e.per_class), title=f"pixel FM, CFG w={e.guidance}"),
        experiment.plot_image_grid(out_dir / "samples_latent.png", x_lat[order], nrow=min(8, e.per_class), title=f"latent FM, CFG w={e.guidance}"),
        experiment.plot_loss_curves(out_dir / "loss.png", {"pixel": h_pix, "latent": h_lat}),
    ]
    return {
        "checks": checks,
        "metrics": m,
        "baseline": {"name": "pixel-space FM (MLP 64->256x3->64)", "fd": m["fd_pixel"], "acc": m["acc_pixel"]},
        "plots": plots,
        "notes": (f"[class] Both FM models {cfg.fm.steps} steps, batch {cfg.fm.batch_size}, one seed (spec: 5k steps, 3 seeds). Sampling: "
                  f"{e.ode_solver} {e.ode_steps} fixed steps (spec: RK45 tol 1e-5; NFE criterion 2 not measured). "
                  "MACs = Dense kernel sizes per sample (forward); latent encodes precomputed once and not included in the ratio. "
                  f"enc MACs once (kernel-size proxy) = {enc_macs_once}. Time per step is wall clock including compile on a shared 2-core CPU."),
    }


# --------------------------------------------------------------------------------------------
# Part "inpaint"
# --------------------------------------------------------------------------------------------
def _train(net, params, batch_fn, ic, seed):
    """CFM (``losses.cfm``) on ``batch_fn(step)``; returns (v_fn, params, history, seconds)."""
    t0 = time.perf_counter()
    params, hist = experiment.train_net(net, losses.cfm, params, batch_fn=batch_fn, steps=ic.steps, seed=seed,
                                        learning_rate=ic.learning_rate)
    jax.block_until_ready(params)
    return experiment.bind(net, params), params, hist, time.perf_counter() - t0


def inpainting_scores(out, raw, x_true, mask, labels, *, clf, test_x) -> dict:
    """Scores of completions ``out`` (after paste) and raw decoded samples ``raw`` (before paste; None if n/a).

    ``known_max_abs_err``: max |out - x| on known pixels (0 = kept exactly); ``visible_mse_raw``: MSE of ``raw``
    to ``x`` on the known pixels; ``hole_mse``/``hole_psnr``: on the hidden pixels, pooled, PSNR with peak-to-peak
    range 2 (images in [-1, 1]); ``fd``: digits FD of the completions vs the full test split; ``label_acc``: the
    digits classifier returns the true label.
    """
    out, x_true, mask = np.asarray(out), np.asarray(x_true), np.asarray(mask)
    hole = mask > 0.5
    hole_mse = float(np.mean((out[hole] - x_true[hole]) ** 2))
    r = {
        "known_max_abs_err": float(np.max(np.abs(out[~hole] - x_true[~hole]))),
        "hole_mse": hole_mse,
        "hole_psnr": float(10.0 * np.log10(4.0 / max(hole_mse, 1e-12))),
        "fd": metrics.digits_fd(out, test_x),
        "label_acc": clf.accuracy(out, labels),
    }
    if raw is not None:
        raw = np.asarray(raw)
        r["visible_mse_raw"] = float(np.mean((raw[~hole] - x_true[~hole]) ** 2))
    return r


def run_inpaint(cfg, out_dir: Path, *, ae, z_train, train_x, test_x, test_y, clf) -> dict:
    """Part "inpaint": latent FM conditioned on concat(E(masked image), m) vs replacement and pixel baselines."""
    ic, seed = cfg.inpaint, cfg.seed
    d = cfg.ae.latent_dim
    X, Z = jnp.asarray(train_x), jnp.asarray(z_train)
    n_train, bsz = X.shape[0], ic.batch_size
    null_lat = null_inpainting_condition(ae.encode, X[:1])  # (1, d + 64): zero image, all-hidden mask
    null_pix = masked_pixel_condition(jnp.zeros_like(X[:1]), jnp.ones_like(X[:1]))

    def draw(step):
        # the same images, masks and condition drops for every model (common random numbers); data stream, not the step's
        k1, k2, k3 = jax.random.split(keystreams.data_key(seed, step), 3)
        idx = jax.random.randint(k1, (bsz,), 0, n_train)
        return idx, half_masks(k2, bsz, 8, 8), jax.random.uniform(k3, (bsz, 1)) < ic.cond_dropout

    def batch_latent_cond(step):
        idx, m, drop = draw(step)
        return {"x": Z[idx], "c": jnp.where(drop, null_lat, inpainting_condition(ae.encode, X[idx], m))}

    def batch_pixel_cond(step):
        idx, m, drop = draw(step)
        return {"x": X[idx], "c": jnp.where(drop, null_pix, masked_pixel_condition(X[idx], m))}

    def batch_latent(step):
        return Z[draw(step)[0]]

    def batch_pixel(step):
        return X[draw(step)[0]]

    ex_x = X[:2]
    ex_m = jnp.ones_like(ex_x)
    nets, fns, hists, secs, nparams = {}, {}, {}, {}, {}
    specs = {
        "latent_cond": (ConcatConditioned(MLP(hidden=cfg.latent.hidden, depth=cfg.latent.depth, out_dim=d)), Z[:2],
                        inpainting_condition(ae.encode, ex_x, ex_m), batch_latent_cond),
        "latent_uncond": (MLP(hidden=cfg.latent.hidden, depth=cfg.latent.depth), Z[:2], None, batch_latent),
        "pixel_cond": (ConcatConditioned(MLP(hidden=cfg.pixel.hidden, depth=cfg.pixel.depth, out_dim=64)), ex_x,
                       masked_pixel_condition(ex_x, ex_m), batch_pixel_cond),
        "pixel_uncond": (MLP(hidden=cfg.pixel.hidden, depth=cfg.pixel.depth), ex_x, None, batch_pixel),
    }
    for name, (net, x_ex, c_ex, batch_fn) in specs.items():
        params = init_params(net, jax.random.key(seed), x_ex, c=c_ex)
        fns[name], params, hists[name], secs[name] = _train(net, params, batch_fn, ic, seed)
        nparams[name] = count_params(params)

    # evaluation set: every test image (or the first eval_images) x masks_per_image random half masks
    n_img = ic.eval_images or test_x.shape[0]
    xk = jnp.asarray(np.tile(test_x[:n_img], (ic.masks_per_image, 1, 1, 1)))
    yk = np.tile(test_y[:n_img], ic.masks_per_image)
    n = xk.shape[0]
    mk = half_masks(jax.random.key(seed + 21), n, 8, 8)
    ks = jax.random.key(seed + 22)  # the same source noise for every sampler
    nfe = ic.ode_steps * samplers.NFE_PER_STEP[ic.ode_solver]
    clip = lambda x: jnp.clip(x, -1.0, 1.0)  # noqa: E731
    ode = dict(solver=ic.ode_solver, steps=ic.ode_steps)
    raws, sample_secs = {}, {}

    def timed(name, f):
        t0 = time.perf_counter()
        r = jax.block_until_ready(f())
        sample_secs[name] = time.perf_counter() - t0
        raws[name] = clip(r)

    c_lat = inpainting_condition(ae.encode, xk, mk)
    timed("latent_cond", lambda: ae.decode(latent_conditional_sample(
        fns["latent_cond"], ks, c_lat, latent_shape=(d,), guidance=ic.guidance,
        null_c=jnp.broadcast_to(null_lat, c_lat.shape) if ic.guidance != 1.0 else None, **ode)))
    timed("latent_uncond_paste", lambda: ae.decode(samplers.ode(fns["latent_uncond"], jax.random.normal(ks, (n, d)), **ode)))
    timed("latent_replacement", lambda: latent_replacement_inpaint(
        fns["latent_uncond"], ks, xk, mk, encode_fn=ae.encode, decode_fn=ae.decode, latent_shape=(d,), steps=nfe,
        return_unpasted=True)[1])
    timed("pixel_cond", lambda: samplers.ode(fns["pixel_cond"], jax.random.normal(ks, xk.shape), c=masked_pixel_condition(xk, mk), **ode))
    timed("pixel_replacement", lambda: samplers.projected_euler(
        fns["pixel_uncond"], jax.random.normal(ks, xk.shape), (1.0 - mk) * xk, forward=lambda x: (1.0 - mk) * x,
        pinv=lambda r: (1.0 - mk) * r, steps=nfe))
    outs = {k: paste_known(v, xk, mk) for k, v in raws.items()}
    # references (not inpainting methods): AE reconstruction of the TRUE image + paste (sees the hidden pixels), mean fill
    outs["ref_ae_oracle"] = paste_known(clip(ae.decode(ae.encode(xk))), xk, mk)
    outs["ref_mean_fill"] = paste_known(jnp.broadcast_to(X.mean(0, keepdims=True), xk.shape), xk, mk)

    m = {}
    for name, out in outs.items():
        for key, val in inpainting_scores(out, raws.get(name), xk, mk, yk, clf=clf, test_x=test_x).items():
            m[f"inpaint/{key}_{name}"] = val
    m["inpaint/label_acc_ground_truth"] = clf.accuracy(np.asarray(xk), yk)
    m["inpaint/visible_mse_ratio_cond_over_uncond"] = m["inpaint/visible_mse_raw_latent_cond"] / m["inpaint/visible_mse_raw_latent_uncond_paste"]
    m["inpaint/fd_ratio_latent_cond_over_pixel_cond"] = m["inpaint/fd_latent_cond"] / m["inpaint/fd_pixel_cond"]
    m["inpaint/nfe"] = float(nfe)
    m["inpaint/num_completions"] = float(n)
    for name in specs:
        m[f"inpaint/seconds_train_{name}"] = secs[name]
        m[f"inpaint/params_{name}"] = float(nparams[name])
        m[f"inpaint/final_loss_{name}"] = hists[name][-1]["loss"]
    for name, sec in sample_secs.items():
        m[f"inpaint/seconds_sample_{name}"] = sec
    methods = [k for k in outs if not k.startswith("ref_")]
    checks = {
        "inpaint/known_pixels_exact_all": all(m[f"inpaint/known_max_abs_err_{k}"] == 0.0 for k in methods),
        "inpaint/visible_mse_cond_le_0.2x_uncond": m["inpaint/visible_mse_ratio_cond_over_uncond"] <= 0.2,
        "inpaint/label_acc_latent_cond_ge_0.7": m["inpaint/label_acc_latent_cond"] >= 0.7,
        "inpaint/fd_latent_cond_le_1.3x_pixel_cond": m["inpaint/fd_latent_cond"] <= 1.3 * m["inpaint/fd_pixel_cond"],
        "inpaint/hole_mse_latent_cond_le_latent_replacement": m["inpaint/hole_mse_latent_cond"] <= m["inpaint/hole_mse_latent_replacement"],
    }

    k = min(10, n)
    masked_view = np.asarray(jnp.where(mk > 0.5, 0.0, xk))[:k]
    rows = [np.asarray(xk)[:k], masked_view] + [np.asarray(outs[name])[:k] for name in methods]
    plots = [
        experiment.plot_image_grid(out_dir / "inpaint_samples.png", np.concatenate(rows), nrow=k,
                                   title="rows: truth, masked (hole grey), " + ", ".join(methods)),
        experiment.plot_loss_curves(out_dir / "inpaint_loss.png", hists),
    ]
    notes = (f"[inpaint] Four FM nets (latent {cfg.latent.hidden}x{cfg.latent.depth}, pixel {cfg.pixel.hidden}x{cfg.pixel.depth}; "
             f"conditional = the same MLP on concat(x_t, c)) trained {ic.steps} steps, batch {ic.batch_size}, one seed, random "
             f"half masks drawn fresh per step, condition dropout {ic.cond_dropout}, guidance {ic.guidance}. Eval: {n} completions "
             f"({n_img} test images x {ic.masks_per_image} random half masks), one sample each; ODE samplers {ic.ode_solver} "
             f"{ic.ode_steps} steps, replacement baselines Euler {nfe} steps (same NFE = {nfe}; plus a decode+encode per step "
             "for the latent one). Completions are clipped to [-1, 1] and the known pixels pasted back. Hole MSE of a sampler "
             "includes the posterior variance (a sample, not the posterior mean), so it favours blurry completions less than a "
             "regressor would be favoured. FD is against the full test split (completions share their known half with it).")
    return {"checks": checks, "metrics": m, "plots": plots, "notes": notes}


def run(cfg, out_dir: Path) -> dict:
    validate(cfg)
    parts = tuple(cfg.parts)
    seed = cfg.seed
    train_x, train_y = load_digits_arrays("train")
    test_x, test_y = load_digits_arrays("test")
    clf = metrics.load_digits_classifier()

    # 1. autoencoder (trained by the project) with latent scaling to unit std per dimension, shared by both parts
    t0 = time.perf_counter()
    ae, ae_hist = train_autoencoder(train_x, latent_dim=cfg.ae.latent_dim, channels=cfg.ae.channels, steps=cfg.ae.steps,
                                    batch_size=cfg.ae.batch_size, learning_rate=cfg.ae.learning_rate, seed=seed)
    ae_secs = time.perf_counter() - t0
    z_train = np.asarray(ae.encode(jnp.asarray(train_x)))  # precomputed once (counted once, not per step)
    recon_test = np.clip(np.asarray(ae.decode(ae.encode(jnp.asarray(test_x)))), -1, 1)
    m = {
        "fd_ae_reconstruction": metrics.digits_fd(recon_test, test_x),
        "fd_floor_train_vs_test": metrics.digits_fd(train_x[: len(test_x)], test_x),
        "ae_recon_mse_test": float(np.mean((recon_test - test_x) ** 2)),
        "latent_std_mean": float(np.mean(np.std(z_train, 0))),
        "seconds_autoencoder": ae_secs,
    }
    checks, notes = {}, [f"Conv AE (latent {cfg.ae.latent_dim}, unit-std scaling) trained {cfg.ae.steps} steps; parts {parts}."]
    plots = [experiment.plot_image_grid(out_dir / "ae_reconstructions.png", np.concatenate([test_x[:32], recon_test[:32]]),
                                        title="AE: test (top) / recon (bottom)")]
    result = {}
    if "class" in parts:
        r = run_class(cfg, out_dir, ae=ae, z_train=z_train, train_x=train_x, train_y=train_y, test_x=test_x, clf=clf)
        result["baseline"] = r["baseline"]
        m.update(r["metrics"]), checks.update(r["checks"]), plots.extend(r["plots"]), notes.append(r["notes"])
    if "inpaint" in parts:
        r = run_inpaint(cfg, out_dir, ae=ae, z_train=z_train, train_x=train_x, test_x=test_x, test_y=test_y, clf=clf)
        m.update(r["metrics"]), checks.update(r["checks"]), plots.extend(r["plots"]), notes.append(r["notes"])
        result.setdefault("baseline", {"name": "pixel-space conditional FM + paste (inpainting)",
                                       "fd": r["metrics"]["inpaint/fd_pixel_cond"],
                                       "hole_mse": r["metrics"]["inpaint/hole_mse_pixel_cond"]})
    return {
        "claim": CLAIM,
        "passed": bool(all(checks.values())),
        "checks": checks,
        "metrics": m,
        "plots": plots,
        "notes": " ".join(notes),
        **result,
    }
