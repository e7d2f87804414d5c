"""Diagnostic for the kvpo on-manifold criterion (issue #9): where do routed branches leave the circle, and why?

Not part of the registered experiment (``python -m experiments.run kvpo`` does not run it). It pretrains the
experiment's generator (:func:`experiments.kvpo.main.make_pretrain`, same config) and streams the post-fork blocks
with an explicit KV-index row per block (``rows (n, num_blocks, 5)``), so every routing variant is a numpy
construction of rows. The spec variant (``m = 0``, dispersed subsets from the pool ``1 .. b* - 4``, all ``P`` window
blocks routed) is checked to reproduce :func:`experiments.kvpo.main.make_generate` exactly before anything else is
measured.

On-manifold = ``| |y_b| - 1 | < 0.1`` (spec kvpo.md §5) over the window blocks ``b* .. b* + P - 1``.

Variants (all ours, diagnostic only):
  - ``m``: keep the ``m`` nearest blocks ``b - m .. b - 1`` and route ``3 - m`` blocks from the pool (the official
    code keeps ``m = 4`` nearest frames; the spec's §5 experiment uses ``m = 0``).
  - ``q``: each window block is routed independently with probability ``q`` (else default context).
  - ``pool L``: the pool restricted to its ``L`` most recent blocks ``b* - 3 - L .. b* - 4``.
  - ``lag k``: a regular, contiguous context ``{b - 3 - k, b - 2 - k, b - 1 - k}`` (``k = 0`` is the default):
    staleness without irregular spacing.
  - ``stride s``: a regular context ``{b - 3 s, b - 2 s, b - s}``: spacing other than the trained unit spacing.
  - ``contig``: one random contiguous triple ``{s, s + 1, s + 2}`` of the spec pool per branch: the spec pool's
    staleness without its irregular spacing.

Usage: ``nice -n 15 python -m experiments.kvpo.diagnose_manifold [--preset smoke|cpu] [--seeds 0 1] [--nm 64]``.
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.kvpo import config as kvcfg
from experiments.kvpo import main as kv
from flowjax import align

THRESH = 0.1


def make_stream(cfg, prefill, predict, commit):
    nb, pre = cfg.num_blocks, cfg.prefix_blocks

    @jax.jit
    def stream(params, h0, noises, rows):
        """Blocks ``pre .. nb-1`` with the KV index ``rows[:, b]`` for block ``b`` (same sampler as ``make_generate``)."""
        cache = prefill(params, h0[:, :pre])

        def body(b, carry):
            h, cache = carry
            row = jax.lax.dynamic_index_in_dim(rows, b, axis=1, keepdims=False)
            x1a = predict(params, cache, noises[:, b, 0], kv.K_TIMES[0], row)
            x_half = kv.K_TIMES[1] * x1a + (1 - kv.K_TIMES[1]) * noises[:, b, 1]
            x1b = predict(params, cache, x_half, kv.K_TIMES[1], row)
            cache = commit(params, cache, x1b, row)
            return h.at[:, b].set(x1b), cache

        h, _ = jax.lax.fori_loop(pre, nb, body, (h0, cache))
        return h

    return stream


def default_rows(n, nb):
    return np.broadcast_to(np.asarray(kv.default_row(jnp.arange(nb))), (n, nb, 5)).copy()


def routed_rows(bstar, subsets, m, route_mask, P, nb):
    """Rows with the window blocks ``b* + p`` (where ``route_mask[:, p]``) routed to ``[0, S (3 - m), b-m .. b-1, b]``."""
    n = bstar.shape[0]
    rows = default_rows(n, nb)
    for i in range(n):
        for p in range(P):
            if not route_mask[i, p]:
                continue
            b = int(bstar[i]) + p
            near = [b - j for j in range(m, 0, -1)]
            rows[i, b] = [0, *list(subsets[i][: 3 - m]), *near, b]
    return rows


def lag_rows(bstar, k, P, nb, stride=1):
    """Window blocks attend to ``[0, b - 1 - k - 2 s, b - 1 - k - s, b - 1 - k, b]`` (blocks < 1 -> padding)."""
    n = bstar.shape[0]
    rows = default_rows(n, nb)
    for i in range(n):
        for p in range(P):
            b = int(bstar[i]) + p
            ctx = [c if c >= 1 else -1 for c in (b - 1 - k - 2 * stride, b - 1 - k - stride, b - 1 - k)]
            rows[i, b] = [0, *ctx, b]
    return rows


def window_rates(h, bstar, P):
    """(rate over the window, per-position rates (P,), |‖y‖ - 1| of the window blocks)."""
    dev = np.abs(np.linalg.norm(np.asarray(h), axis=-1) - 1.0)
    win = np.stack([dev[np.arange(h.shape[0]), bstar + p] for p in range(P)], 1)  # (n, P)
    ok = win < THRESH
    return float(ok.mean()), ok.mean(0), win


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--nm", type=int, default=64, help="prefixes per seed (x G branches)")
    ap.add_argument("--pretrain-steps", type=int, default=None)
    ap.add_argument("--cache-dir", default=None, help="reuse pretrained parameters across runs (pickle files)")
    args = ap.parse_args()
    cfg = kvcfg.get_config(args.preset)
    if args.pretrain_steps:
        cfg.pretrain_steps = args.pretrain_steps
    nb, P, G, pre, ns = cfg.num_blocks, cfg.window, cfg.branches, cfg.prefix_blocks, cfg.subset
    net, prefill, predict, commit = kv.make_model(cfg)
    generate, _ = kv.make_generate(cfg, prefill, predict, commit)
    pretrain = kv.make_pretrain(cfg, prefill, predict)
    stream = make_stream(cfg, prefill, predict, commit)
    out = {"preset": args.preset, "pretrain_steps": cfg.pretrain_steps, "pretrain_batch": cfg.pretrain_batch, "seeds": {}}
    for seed in args.seeds:
        t0 = time.time()
        key = jax.random.key(seed)
        ck = Path(args.cache_dir) / f"kvpo_params_{args.preset}_{cfg.pretrain_steps}_{cfg.pretrain_batch}_seed{seed}.pkl" if args.cache_dir else None
        if ck is not None and ck.exists():
            params, loss = pickle.loads(ck.read_bytes())
        else:
            params, losses = pretrain(net.init(key, jnp.zeros((2, 4, 3))), jax.random.fold_in(key, 1))
            loss = float(jnp.mean(losses[-50:]))
            if ck is not None:
                ck.write_bytes(pickle.dumps((jax.device_get(params), loss)))
        res = {"pretrain_loss": loss, "pretrain_s": round(time.time() - t0, 1)}
        nm = args.nm
        kp = jax.random.key(20_000 + seed)  # as in main.run's on-manifold measurement
        pre_m, nz_m = kv.sample_sequences(kp, nm, cfg), jax.random.normal(jax.random.fold_in(kp, 1), (nm, nb, 2, 2))
        rng = np.random.default_rng(seed)
        bstar = rng.integers(pre, nb - P + 1, size=nm)
        kd = jax.random.fold_in(kp, 2)
        plans = np.stack([np.asarray(align.dispersed_routing_plan(jax.random.fold_in(kd, 100 + i), jnp.arange(1, bs - 3), G, ns))
                          for i, bs in enumerate(bstar)])  # (nm, G, 3), pool 1 .. b* - 4
        rep = lambda a: jnp.repeat(jnp.asarray(a), G, 0)  # noqa: E731
        h0, nz = rep(pre_m), rep(nz_m)
        bs = np.repeat(bstar, G)
        subs = plans.reshape(nm * G, ns)
        allw = np.ones((nm * G, P), bool)

        # 0) the diagnostic's streamer reproduces the experiment's generator for the spec routing
        h_ref, _, _, _ = jax.jit(generate)(params, h0, nz, jnp.asarray(bs, jnp.int32), jnp.asarray(subs, jnp.int32),
                                           jnp.ones((nm * G,), bool))
        h_spec = stream(params, h0, nz, jnp.asarray(routed_rows(bs, subs, 0, allw, P, nb), jnp.int32))
        res["max_abs_diff_vs_make_generate"] = float(jnp.max(jnp.abs(h_ref - h_spec)))

        h_def = stream(params, h0, nz, jnp.asarray(default_rows(nm * G, nb), jnp.int32))
        r_def, pos_def, dev_def = window_rates(h_def, bs, P)
        r_spec, pos_spec, dev_spec = window_rates(h_spec, bs, P)
        res["pretrained_default"] = {"rate": r_def, "per_pos": pos_def.round(3).tolist()}
        res["spec_m0"] = {"rate": r_spec, "ratio": r_spec / r_def, "per_pos": pos_spec.round(3).tolist(),
                          "dev_quantiles_50_90_99": np.quantile(dev_spec, [0.5, 0.9, 0.99]).round(3).tolist(),
                          "dev_quantiles_default": np.quantile(dev_def, [0.5, 0.9, 0.99]).round(3).tolist()}
        # by the gap between the query block and its newest attended context block, first window block only
        gap = bs - subs.max(1)  # >= 4
        ok0 = dev_spec[:, 0] < THRESH
        res["spec_m0"]["p0_rate_by_gap"] = {int(g): [round(float(ok0[gap == g].mean()), 3), int((gap == g).sum())]
                                            for g in np.unique(gap)}
        # by the spacing regularity of S_g (contiguous vs not), first window block
        contig = (np.diff(subs, axis=1) == 1).all(1)
        res["spec_m0"]["p0_rate_contiguous_vs_not"] = [round(float(ok0[contig].mean()), 3) if contig.any() else None,
                                                       round(float(ok0[~contig].mean()), 3), int(contig.sum())]
        # by the span max(S) - min(S) of the routed blocks (2 = contiguous), all window positions
        span = subs.max(1) - subs.min(1)
        okw = (dev_spec < THRESH).mean(1)
        edges = [2, 3, 5, 8, 12, 100]
        res["spec_m0"]["rate_by_span"] = {f"{lo}-{hi - 1}": [round(float(okw[(span >= lo) & (span < hi)].mean()), 3),
                                                             int(((span >= lo) & (span < hi)).sum())]
                                          for lo, hi in zip(edges[:-1], edges[1:]) if ((span >= lo) & (span < hi)).any()}
        # 1) m nearest blocks kept
        res["m"] = {}
        for m in (0, 1, 2):
            r, pos, _ = window_rates(stream(params, h0, nz, jnp.asarray(routed_rows(bs, subs, m, allw, P, nb), jnp.int32)), bs, P)
            res["m"][m] = {"rate": r, "ratio": r / r_def, "per_pos": pos.round(3).tolist()}
        # 2) per-block routing probability q (rate over routed blocks and over the whole window)
        res["q"] = {}
        for q in (0.25, 0.5, 0.75, 1.0):
            mask = np.random.default_rng(1000 + seed).random((nm * G, P)) < q
            h = stream(params, h0, nz, jnp.asarray(routed_rows(bs, subs, 0, mask, P, nb), jnp.int32))
            _, _, dev = window_rates(h, bs, P)
            ok = dev < THRESH
            res["q"][q] = {"window_rate": float(ok.mean()), "routed_blocks_rate": float(ok[mask].mean()),
                           "unrouted_blocks_rate": float(ok[~mask].mean()) if (~mask).any() else None}
        # 3) pool restricted to the L most recent eligible blocks (b* - 3 - L .. b* - 4)
        res["pool"] = {}
        for L in (3, 5, 8):
            pl = np.stack([np.asarray(align.dispersed_routing_plan(jax.random.fold_in(kd, 100 + i),
                                                                   jnp.arange(max(1, b - 3 - L), b - 3), G, ns))
                           for i, b in enumerate(bstar)]).reshape(nm * G, ns)
            r, pos, _ = window_rates(stream(params, h0, nz, jnp.asarray(routed_rows(bs, pl, 0, allw, P, nb), jnp.int32)), bs, P)
            res["pool"][L] = {"rate": r, "ratio": r / r_def, "per_pos": pos.round(3).tolist()}
        # 4) regular contiguous context at lag k
        res["lag"] = {}
        for k in (0, 1, 2, 3, 5, 8):
            r, pos, _ = window_rates(stream(params, h0, nz, jnp.asarray(lag_rows(bs, k, P, nb), jnp.int32)), bs, P)
            res["lag"][k] = {"rate": r, "ratio": r / r_def, "per_pos": pos.round(3).tolist()}
        res["stride"] = {}
        for st in (1, 2, 3):
            r, pos, _ = window_rates(stream(params, h0, nz, jnp.asarray(lag_rows(bs, st - 1, P, nb, stride=st), jnp.int32)), bs, P)
            res["stride"][st] = {"rate": r, "ratio": r / r_def, "per_pos": pos.round(3).tolist()}
        # 5) one random contiguous triple of the spec pool per branch
        rs = np.random.default_rng(2000 + seed)
        start = np.array([rs.integers(1, b - 5) for b in bs])  # s .. s + 2 <= b* - 4
        ct = np.stack([start, start + 1, start + 2], 1)
        r, pos, _ = window_rates(stream(params, h0, nz, jnp.asarray(routed_rows(bs, ct, 0, allw, P, nb), jnp.int32)), bs, P)
        res["contig"] = {"rate": r, "ratio": r / r_def, "per_pos": pos.round(3).tolist()}
        res["total_s"] = round(time.time() - t0, 1)
        out["seeds"][seed] = res
        print(json.dumps({seed: res}, indent=1), flush=True)
    return out


if __name__ == "__main__":
    main()
