"""FlowTurbo: step identities, NFE bookkeeping, convergence order on the oracle, refiner target."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.losses.distill import flowturbo_refiner
from flowjax.samplers import ode
from flowjax.samplers.flowturbo import (
    flowturbo,
    flowturbo_nfe,
    heun_step,
    make_flowturbo_sampler,
    pseudo_corrector,
    pseudo_corrector_step,
    refiner_step,
)
from flowjax.testing import GaussianMixtureFlow


def ring(std=0.3):
    ang = 2 * np.pi * np.arange(8) / 8
    means = 2.0 * np.stack([np.cos(ang), np.sin(ang)], 1)
    return GaussianMixtureFlow(jnp.asarray(means), jnp.full((8,), std), jnp.ones((8,)))


def test_p_step_with_exact_cache_is_h_step_and_r_with_zero_refiner_is_euler():
    flow = ring()
    x = jax.random.normal(jax.random.key(0), (8, 2), jnp.float64)
    t = jnp.full((8,), 0.3)
    h, ch = heun_step(flow.velocity, x, 0.3, 0.1)
    p, cp = pseudo_corrector_step(flow.velocity, x, 0.3, 0.1, flow.velocity(x, t))
    assert bool(jnp.all(h == p)) and bool(jnp.all(ch == cp))
    cache = jnp.ones_like(x)
    r, cr = refiner_step(lambda x, t, v: jnp.zeros_like(x), x, 0.3, 0.1, cache)
    np.testing.assert_array_equal(np.asarray(r), np.asarray(x + 0.1 * cache))
    # A whole P-only schedule starting without a cache equals H then P (first k1 evaluated).
    a = flowturbo(flow.velocity, x, n_h=0, n_p=3, n_r=0)
    b = flowturbo(flow.velocity, x, n_h=1, n_p=2, n_r=0)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-12)


def test_nfe_bookkeeping_by_counting_calls():
    counts = {"v": 0, "r": 0}

    def v(x, t):
        counts["v"] += 1
        return -x

    def r(x, t, vref):
        counts["r"] += 1
        return jnp.zeros_like(x)

    x = jnp.ones((2, 2))
    for nh, np_, nr in [(1, 5, 3), (2, 4, 3), (0, 4, 2), (3, 0, 0)]:
        counts.update(v=0, r=0)
        with jax.disable_jit():
            flowturbo(v, x, n_h=nh, n_p=np_, n_r=nr, refiner=r)
        nfe = flowturbo_nfe(nh, np_, nr)
        assert counts == {"v": nfe["predictor"], "r": nfe["refiner"]}
        assert nfe["steps"] == nh + np_ + nr
    with pytest.raises(ValueError, match="refiner"):
        flowturbo(v, x, n_h=1, n_p=0, n_r=2)
    with pytest.raises(ValueError, match="cached"):
        flowturbo(v, x, n_h=0, n_p=0, n_r=2, refiner=r)


def test_convergence_orders_on_oracle():
    flow = ring()
    x0 = jax.random.normal(jax.random.key(1), (64, 2), jnp.float64)
    ref = flow.flow_map(x0, 0.0, 0.95)
    ns = [8, 16, 32, 64]
    errs = {"euler": [], "heun": [], "pseudo": []}
    for n in ns:
        errs["euler"].append(ode(flow.velocity, x0, t1=0.95, solver="euler", steps=n))
        errs["heun"].append(flowturbo(flow.velocity, x0, n_h=n, n_p=0, n_r=0, t1=0.95))
        errs["pseudo"].append(pseudo_corrector(flow.velocity, x0, steps=n, t1=0.95))
    slopes = {}
    for k, outs in errs.items():
        e = [float(jnp.mean(jnp.abs(o - ref))) for o in outs]
        slopes[k] = np.polyfit(np.log(ns), np.log(e), 1)[0]
    assert abs(slopes["euler"] + 1) < 0.3, slopes
    assert abs(slopes["heun"] + 2) < 0.3, slopes
    assert abs(slopes["pseudo"] + 2) < 0.3, slopes


def test_exact_on_straight_flow_and_compiled_sampler_matches():
    m = jnp.array([1.0, -0.5])
    v = lambda x, t: (m[None] - x) / (1.0 - t)[:, None]  # point mass at m: straight trajectories
    x0 = jax.random.normal(jax.random.key(2), (8, 2), jnp.float64)
    t1 = 0.9
    exact = x0 + t1 * (m[None] - x0)
    # Exact refiner: the true velocity minus the reference.
    r = lambda x, t, vref: v(x, t) - vref
    for nh, np_, nr in [(3, 0, 0), (0, 3, 0), (1, 2, 2)]:
        out = flowturbo(v, x0, n_h=nh, n_p=np_, n_r=nr, refiner=r, t1=t1)
        np.testing.assert_allclose(np.asarray(out), np.asarray(exact), atol=1e-12)
    sampler = make_flowturbo_sampler(v, r, n_h=1, n_p=2, n_r=2, t1=t1)
    np.testing.assert_allclose(np.asarray(sampler(jnp.array(x0))), np.asarray(exact), atol=1e-12)


def test_refiner_loss_target_offset_zero_at_delta_zero_and_minimum_at_exact_offset():
    flow = ring()
    x1 = flow.sample_data(jax.random.key(3), 64)
    _, aux = flowturbo_refiner(lambda x, t, v: jnp.zeros_like(x), jax.random.key(4), x1, teacher=flow.velocity, delta_max=0.0)
    assert float(aux["offset_mse_at_zero"]) == 0.0 and float(aux["mse"]) == 0.0
    # For a fixed delta the exact refiner r(x', t', v0) = v_T(x', t') - v0 has zero loss: the
    # target is a deterministic function of (x', t', v0).
    exact = lambda x, t, v0: flow.velocity(x, t) - v0
    loss, aux = flowturbo_refiner(exact, jax.random.key(4), x1, teacher=flow.velocity)
    assert float(loss) < 1e-20 and float(aux["offset_mse_at_zero"]) > 1e-6
