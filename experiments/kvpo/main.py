"""kvpo experiment: KV-routing + TVE policy (KVPO) vs SDE-noise GRPO on a causal block generator (spec kvpo.md §5)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.kvpo.config import CLAIM
from flowjax import align, experiment
from flowjax.nets import MLP, init_params

K_TIMES = np.array([0.0, 0.5])  # 2-step x-prediction sampler per block


def sample_sequences(key, n, cfg):
    k1, k2, k3 = jax.random.split(key, 3)
    phi0 = jax.random.uniform(k1, (n,), minval=0.0, maxval=2 * np.pi)
    d = jnp.where(jax.random.bernoulli(k2, 0.5, (n,)), 1.0, -1.0)
    phi = phi0[:, None] + d[:, None] * cfg.step_angle * jnp.arange(cfg.num_blocks)[None, :]
    return jnp.stack([jnp.cos(phi), jnp.sin(phi)], -1) + cfg.noise * jax.random.normal(k3, (n, cfg.num_blocks, 2))


def default_idx(b):
    return jnp.stack([jnp.zeros_like(b), b - 3, b - 2, b - 1], -1)


def block_rewards(h):
    """(n, B) per-block reward 1[wrap(phi_b - phi_{b-1}) > 0] - |y_b - 2 y_{b-1} + y_{b-2}|^2 (0 for b < 2)."""
    phi = jnp.arctan2(h[..., 1], h[..., 0])
    dphi = jnp.angle(jnp.exp(1j * (phi[:, 1:] - phi[:, :-1])))
    curv = jnp.sum((h[:, 2:] - 2 * h[:, 1:-1] + h[:, :-2]) ** 2, -1)
    r = (dphi[:, 1:] > 0).astype(h.dtype) - curv
    return jnp.concatenate([jnp.zeros((h.shape[0], 2), h.dtype), r], 1), jnp.concatenate(
        [jnp.zeros((h.shape[0], 2), h.dtype), (dphi[:, 1:] > 0).astype(h.dtype)], 1)


def window_mean(r, start, length):
    ar = jnp.arange(r.shape[1])[None, :]
    length = jnp.broadcast_to(jnp.asarray(length), start.shape)[:, None]
    mask = ((ar >= start[:, None]) & (ar < start[:, None] + length)).astype(r.dtype)
    return jnp.sum(r * mask, 1) / jnp.sum(mask, 1)


def make_model(cfg):
    net = MLP(hidden=cfg.hidden, depth=cfg.depth, out_dim=2)

    def g(params, x, t, ctx):
        return net.apply(params, jnp.concatenate([x, ctx.reshape(x.shape[0], -1)], -1), t)

    return net, g


def make_generate(cfg, g):
    nb, p_win = cfg.num_blocks, cfg.window
    eps0 = cfg.sde_a * np.sqrt(1.0 / K_TIMES[1])  # Flow-GRPO eps_t at t = 0 with the first-grid-value floor

    def generate(params, h0, noises, bstar, route_idx, use_route, xi=None):
        """Roll out blocks prefix..nb-1; returns history and the window's recorded (x, x1_hat) and SDE transitions."""
        n = h0.shape[0]
        ar = jnp.arange(n)
        rec_x = jnp.zeros((n, p_win, 2, 2), h0.dtype)
        rec_x1 = jnp.zeros((n, p_win, 2, 2), h0.dtype)

        def body(b, carry):
            h, rec_x, rec_x1 = carry
            bb = jnp.full((n,), b)
            in_win = (bb >= bstar) & (bb < bstar + p_win)
            idx = jnp.where((in_win & use_route)[:, None], route_idx, default_idx(bb))
            ctx = jnp.take_along_axis(h, idx[:, :, None], axis=1)
            x0 = noises[:, b, 0]
            x1a = g(params, x0, jnp.zeros((n,), h0.dtype), ctx)
            x_half = 0.5 * x1a + 0.5 * noises[:, b, 1]
            if xi is not None:  # Flow-GRPO-style SDE step 0 -> 0.5 inside the window
                mu = x0 + 0.5 * ((x1a - x0) + 0.5 * eps0**2 * (-x0))
                x_half = jnp.where(in_win[:, None], mu + eps0 * np.sqrt(0.5) * xi[:, b], x_half)
            x1b = g(params, x_half, jnp.full((n,), 0.5, h0.dtype), ctx)
            h = h.at[:, b].set(x1b)
            p = jnp.clip(b - bstar, 0, p_win - 1)
            w = in_win[:, None, None]
            rec_x = rec_x.at[ar, p].set(jnp.where(w, jnp.stack([x0, x_half], 1), rec_x[ar, p]))
            rec_x1 = rec_x1.at[ar, p].set(jnp.where(w, jnp.stack([x1a, x1b], 1), rec_x1[ar, p]))
            return h, rec_x, rec_x1

        return jax.lax.fori_loop(cfg.prefix_blocks, nb, body, (h0, rec_x, rec_x1))

    return generate, eps0


def run(cfg, out_dir: Path) -> dict:
    net, g = make_model(cfg)
    generate, eps0 = make_generate(cfg, g)
    nb, P, G, B = cfg.num_blocks, cfg.window, cfg.branches, cfg.prefixes_per_update
    metrics, curves = {}, {}
    finals = {"kvpo": [], "sde": [], "pretrained": []}
    onman = {"kvpo": [], "sde": [], "pretrained": []}
    for seed in cfg.seeds:
        key = jax.random.key(seed)
        params = init_params(net, key, jnp.zeros((2, 10)))
        opt = optax.adam(cfg.pretrain_lr)

        def pre_step(carry, k):
            prm, st = carry
            k1, k2, k3, k4 = jax.random.split(k, 4)
            y = sample_sequences(k1, cfg.pretrain_batch, cfg)
            b = jax.random.randint(k2, (cfg.pretrain_batch,), 4, nb)
            ctx = jnp.take_along_axis(y, default_idx(b)[:, :, None], axis=1)
            x1 = y[jnp.arange(cfg.pretrain_batch), b]
            t = jax.random.uniform(k3, (cfg.pretrain_batch,))
            xt = t[:, None] * x1 + (1 - t[:, None]) * jax.random.normal(k4, x1.shape)
            loss, grads = jax.value_and_grad(lambda q: jnp.mean(jnp.sum((g(q, xt, t, ctx) - x1) ** 2, -1)))(prm)
            upd, st = opt.update(grads, st, prm)
            return (optax.apply_updates(prm, upd), st), loss

        (params0, _), _ = jax.jit(lambda c, ks: jax.lax.scan(pre_step, c, ks))(
            (params, opt.init(params)), jax.random.split(jax.random.fold_in(key, 1), cfg.pretrain_steps))

        # held-out evaluation prefixes and noises (deterministic native sampler, no routing)
        ke = jax.random.key(10_000 + seed)
        h_eval = sample_sequences(ke, cfg.eval_prefixes, cfg)
        nz_eval = jax.random.normal(jax.random.fold_in(ke, 1), (cfg.eval_prefixes, nb, 2, 2))
        zeros_b = jnp.zeros((cfg.eval_prefixes,), jnp.int32)
        no_route = jnp.zeros((cfg.eval_prefixes, 4), jnp.int32)

        @jax.jit
        def evaluate(prm):
            h, _, _ = generate(prm, h_eval, nz_eval, zeros_b + nb, no_route, jnp.zeros((cfg.eval_prefixes,), bool))
            r, prog = block_rewards(h)
            start = jnp.full((cfg.eval_prefixes,), cfg.prefix_blocks)
            return jnp.mean(window_mean(r, start, nb - cfg.prefix_blocks)), jnp.mean(window_mean(prog, start, nb - cfg.prefix_blocks) > 0.5)

        rng = np.random.default_rng(seed)

        def draw_batch(k, nprefix):
            prefixes = sample_sequences(k, nprefix, cfg)
            bstar = rng.integers(cfg.prefix_blocks, nb - P + 1, size=nprefix)
            plans = []
            for i, bs in enumerate(bstar):
                pool = jnp.arange(1, bs - 3)  # blocks 1 .. b* - 4 (m = 0 recent blocks kept)
                s = align.dispersed_routing_plan(jax.random.fold_in(k, 100 + i), pool, G, cfg.subset)
                plans.append(np.asarray(align.routed_context([0], jnp.zeros((0,), jnp.int32), s)))
            return prefixes, jnp.asarray(bstar), jnp.asarray(np.stack(plans))

        def kvpo_rollouts(prm, prefixes, noises, bstar, plans):
            nprefix = prefixes.shape[0]
            rep = lambda a: jnp.repeat(a, G + 1, axis=0)
            route = jnp.concatenate([jnp.zeros((nprefix, 1, 4), jnp.int32), plans], 1).reshape(nprefix * (G + 1), 4)
            use = jnp.tile(jnp.arange(G + 1) > 0, nprefix)
            h, rx, rx1 = generate(prm, rep(prefixes), rep(noises), rep(bstar), route, use)
            return h, rx, rx1

        # on-manifold rates with the pretrained model (64 prefixes)
        kp = jax.random.key(20_000 + seed)
        pre_m, nz_m = sample_sequences(kp, 64, cfg), jax.random.normal(jax.random.fold_in(kp, 1), (64, nb, 2, 2))
        _, bs_m, plans_m = draw_batch(jax.random.fold_in(kp, 2), 64)
        h_k, _, _ = kvpo_rollouts(params0, pre_m, nz_m, bs_m, plans_m)
        win = lambda h, bs: (jnp.abs(jnp.linalg.norm(h, axis=-1) - 1.0) < 0.1, jnp.arange(nb)[None] - bs[:, None])
        ok, rel = win(h_k, jnp.repeat(bs_m, G + 1))
        inwin = (rel >= 0) & (rel < P)
        branch = jnp.tile(jnp.arange(G + 1) > 0, 64)[:, None]
        onman["kvpo"].append(float(jnp.sum(ok & inwin & branch) / jnp.sum(inwin & branch)))
        onman["pretrained"].append(float(jnp.sum(ok & inwin & ~branch) / jnp.sum(inwin & ~branch)))
        xi_m = jax.random.normal(jax.random.fold_in(kp, 3), (64 * G, nb, 2))
        h_s, _, _ = generate(params0, jnp.repeat(pre_m, G, 0), jnp.repeat(nz_m, G, 0), jnp.repeat(bs_m, G), jnp.zeros((64 * G, 4), jnp.int32),
                             jnp.zeros((64 * G,), bool), xi=xi_m)
        ok_s, rel_s = win(h_s, jnp.repeat(bs_m, G))
        inwin_s = (rel_s >= 0) & (rel_s < P)
        onman["sde"].append(float(jnp.sum(ok_s & inwin_s) / jnp.sum(inwin_s)))

        opt_rl = optax.adam(cfg.lr)

        @jax.jit
        def kvpo_update(prm, st, prefixes, noises, bstar, plans):
            h, rx, rx1 = kvpo_rollouts(jax.lax.stop_gradient(prm), prefixes, noises, bstar, plans)
            r, _ = block_rewards(h)
            bs_rep = jnp.repeat(bstar, G + 1)
            r_loc = window_mean(r, bs_rep, P).reshape(B, G + 1)
            r_glob = window_mean(r, bs_rep, nb - bs_rep).reshape(B, G + 1)
            a_loc = jax.vmap(align.anchor_advantages)(r_loc[:, 1:], r_loc[:, 0])
            a_glob = jax.vmap(align.anchor_advantages)(r_glob[:, 1:], r_glob[:, 0])
            adv = jax.vmap(align.fuse_advantages)(a_loc, a_glob)
            better = jnp.any(r_loc[:, 1:] > r_loc[:, :1], 1) | jnp.any(r_glob[:, 1:] > r_glob[:, :1], 1)
            h = h.reshape(B, G + 1, nb, 2)[:, 1:]
            rx = rx.reshape(B, G + 1, P, 2, 2)[:, 1:]
            rx1 = rx1.reshape(B, G + 1, P, 2, 2)[:, 1:]
            # deployment (unperturbed) context of every window block, from each branch's own history
            b_abs = bstar[:, None] + jnp.arange(P)[None]  # (B, P)
            idx = default_idx(b_abs)  # (B, P, 4)
            ctx = jnp.take_along_axis(h[:, :, None, :, None, :], idx[:, None, :, :, None, None], axis=3)[:, :, :, :, 0]  # (B,G,P,4,2)
            ctx = jnp.broadcast_to(ctx[:, :, :, None], (B, G, P, 2, 4, 2))
            tk = jnp.broadcast_to(jnp.asarray(K_TIMES, h.dtype), (B, G, P, 2))

            def energies(q):
                pred = g(q, rx.reshape(-1, 2), tk.reshape(-1), ctx.reshape(-1, 4, 2)).reshape(B, G, P, 2, 2)
                return jax.vmap(lambda a, b: align.trajectory_velocity_energy(a, b, K_TIMES, grad_steps=cfg.grad_steps))(rx1, pred)

            e_old = jax.lax.stop_gradient(energies(prm))
            e_ref = energies(params0)

            def loss_fn(q):
                e = energies(q)
                losses, aux = jax.vmap(lambda a, b, c, d, f: align.kvpo_loss(a, b, c, d, kl_coef=cfg.kl_coef, any_better=f))(
                    e, e_old, e_ref, adv, better)
                return jnp.mean(losses), aux

            (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(prm)
            upd, st = opt_rl.update(grads, st, prm)
            return optax.apply_updates(prm, upd), st, loss

        @jax.jit
        def sde_update(prm, st, prefixes, noises, bstar, xi):
            n = B * G
            rep = lambda a: jnp.repeat(a, G, axis=0)
            h, rx, rx1 = generate(jax.lax.stop_gradient(prm), rep(prefixes), rep(noises), rep(bstar), jnp.zeros((n, 4), jnp.int32),
                                  jnp.zeros((n,), bool), xi=xi)
            r, _ = block_rewards(h)
            bs_rep = rep(bstar)
            reward = window_mean(r, bs_rep, P) + 0.5 * window_mean(r, bs_rep, nb - bs_rep)
            adv = align.group_advantages(reward, G, eps=1e-4, clip=5.0)
            b_abs = bs_rep[:, None] + jnp.arange(P)[None]
            ctx = jnp.take_along_axis(h[:, None, :, :], default_idx(b_abs)[:, :, :, None], axis=2)  # (n, P, 4, 2)
            x0, x_half = rx[:, :, 0], rx[:, :, 1]

            def loss_fn(q):
                x1a = g(q, x0.reshape(-1, 2), jnp.zeros((n * P,)), ctx.reshape(-1, 4, 2))
                xf = x0.reshape(-1, 2)
                mu = xf + 0.5 * ((x1a - xf) + 0.5 * eps0**2 * (-xf))
                lp = align.gaussian_log_prob(x_half.reshape(-1, 2), mu, eps0 * np.sqrt(0.5)).reshape(n, P)
                surr = align.clipped_surrogate(lp - jax.lax.stop_gradient(lp), adv[:, None], clip_range=1e-4)
                return -jnp.mean(jnp.sum(surr, 1))

            loss, grads = jax.value_and_grad(loss_fn)(prm)
            upd, st = opt_rl.update(grads, st, prm)
            return optax.apply_updates(prm, upd), st, loss

        r_pre, d_pre = evaluate(params0)
        finals["pretrained"].append(float(r_pre))
        metrics[f"direction_fraction_pretrained_seed{seed}"] = float(d_pre)
        for method in ("kvpo", "sde"):
            prm, st = params0, opt_rl.init(params0)
            curve = []
            for u in range(cfg.updates):
                ku = jax.random.fold_in(jax.random.key(30_000 + seed), u)
                prefixes, bstar, plans = draw_batch(ku, B)
                noises = jax.random.normal(jax.random.fold_in(ku, 1), (B, nb, 2, 2))
                if method == "kvpo":
                    prm, st, _ = kvpo_update(prm, st, prefixes, noises, bstar, plans)
                else:
                    xi = jax.random.normal(jax.random.fold_in(ku, 2), (B * G, nb, 2))
                    prm, st, _ = sde_update(prm, st, prefixes, noises, bstar, xi)
                if (u + 1) % max(1, cfg.updates // 10) == 0:
                    curve.append((u + 1, float(evaluate(prm)[0])))
            r_fin, d_fin = evaluate(prm)
            finals[method].append(float(r_fin))
            metrics[f"final_reward_{method}_seed{seed}"] = float(r_fin)
            metrics[f"direction_fraction_{method}_seed{seed}"] = float(d_fin)
            if seed == cfg.seeds[0]:
                curves[method] = ([c[0] for c in curve], [c[1] for c in curve])
        metrics[f"final_reward_pretrained_seed{seed}"] = float(r_pre)
    for k in finals:
        metrics[f"final_reward_{k}"] = float(np.mean(finals[k]))
        metrics[f"on_manifold_{k}"] = float(np.mean(onman[k]))
    checks = [metrics["on_manifold_kvpo"] >= 0.95 * metrics["on_manifold_pretrained"],
              metrics["final_reward_kvpo"] >= metrics["final_reward_sde"]]
    metrics["sde_on_manifold_lower"] = float(metrics["on_manifold_sde"] < metrics["on_manifold_pretrained"])
    if curves:
        curves["pretrained"] = (curves["kvpo"][0], [finals["pretrained"][0]] * len(curves["kvpo"][0]))
    plots = [experiment.plot_curves(out_dir / "reward_curves.png", curves, xlabel="update", ylabel="deterministic rollout reward")]
    return {
        "claim": CLAIM,
        "passed": bool(all(checks)),
        "metrics": metrics,
        "baseline": {"name": "SDE-noise GRPO (Flow-GRPO-style, a=0.7)", "final_reward": metrics["final_reward_sde"]},
        "plots": plots,
        "notes": ("Generator: own causal MLP over a KV-routed context (sink + 3 blocks) because the project's causal transformer "
                  "with kv_index had not landed on main. 2-step x-prediction sampler per block with shared noises; "
                  f"G={G}, P={P}, routed subset of {cfg.subset} older blocks (m=0) by the dispersed rule; TVE with sigma_floor=1, "
                  f"M={cfg.grad_steps} of K=2; PPO clip (0.9, 1.2), KL coef {cfg.kl_coef}; {cfg.updates} updates x {B} prefixes; "
                  "SDE baseline injects eps_0 = a sqrt(1/t_1) noise in the window's 0->0.5 step, group-relative advantages."),
    }
