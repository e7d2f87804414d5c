"""KVPO streaming generator (CausalTransformer + KV cache + kv_index routing) and TVE replay: spec kvpo.md §6 tests 3, 8."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.kvpo import main as kv
from flowjax import align


@functools.lru_cache(maxsize=1)  # the three tests share one generated rollout (read-only)
def _setup():
    cfg = ml_collections.ConfigDict(dict(num_blocks=12, prefix_blocks=7, window=3, subset=3, dim=16, depth=2, heads=2,
                                         step_angle=0.3, noise=0.02, sde_a=0.7))
    net, prefill, predict, commit = kv.make_model(cfg)
    generate, _ = kv.make_generate(cfg, prefill, predict, commit)
    replay = kv.make_replay(cfg, predict, commit)
    params = net.init(jax.random.key(0), jnp.zeros((2, 4, 3)))
    # non-trivial weights: adaLN-Zero / zero-init output layers would make every prediction 0
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(tree, [0.3 * jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)])
    g = 4
    h0 = jnp.repeat(kv.sample_sequences(jax.random.key(2), 1, cfg), g + 1, 0)
    noises = jnp.repeat(jax.random.normal(jax.random.key(3), (1, cfg.num_blocks, 2, 2)), g + 1, 0)
    bstar = 8
    plan = align.dispersed_routing_plan(jax.random.key(4), jnp.arange(1, bstar - 3), g, cfg.subset)
    subsets = jnp.concatenate([jnp.zeros((1, cfg.subset), jnp.int32), plan], 0)
    use = jnp.arange(g + 1) > 0
    out = jax.jit(generate)(params, h0, noises, jnp.full((g + 1,), bstar), subsets, use)
    return cfg, params, replay, out, bstar


def test_shared_prefix_and_zero_energy_for_the_deployment_trajectory():
    cfg, params, replay, (h, rx, rx1, saved), bstar = _setup()
    # test 8: identical up to the fork, routed branches differ inside the window
    np.testing.assert_array_equal(np.asarray(h[:, :bstar]), np.asarray(jnp.broadcast_to(h[:1, :bstar], h[:, :bstar].shape)))
    assert float(jnp.min(jnp.abs(h[1:, bstar] - h[:1, bstar]).sum(-1))) > 1e-6
    # test 3: replaying the anchor (recorded under the unperturbed context) from the saved pre-fork KV with the
    # same parameters reproduces its predictions -> E = 0; routed branches have E > 0 (pitfall: replay must
    # use the deployment context, else every E_g would be 0)
    pred = jax.jit(replay)(params, saved, rx, bstar)
    e = align.trajectory_velocity_energy(rx1, pred, kv.K_TIMES)
    np.testing.assert_allclose(np.asarray(pred[0]), np.asarray(rx1[0]), rtol=1e-6, atol=1e-6)
    assert float(e[0]) < 1e-10
    assert float(jnp.min(e[1:])) > 1e-6


def test_replay_gradients_only_through_params_of_the_first_m_steps():
    cfg, params, replay, (h, rx, rx1, saved), bstar = _setup()

    def energy_sum(q, layers):
        pred = replay(q, layers, rx, bstar)
        return jnp.sum(align.trajectory_velocity_energy(rx1, pred, kv.K_TIMES, grad_steps=1))

    g_params, g_layers = jax.grad(energy_sum, argnums=(0, 1))(params, saved)
    # the saved pre-fork KV is a constant of the replay (official trainer: kv_state_before_fork)
    assert all(float(jnp.max(jnp.abs(x))) == 0.0 for x in jax.tree.leaves(g_layers))
    assert float(sum(jnp.sum(x**2) for x in jax.tree.leaves(g_params))) > 0.0


def test_routing_rows():
    row = np.asarray(kv.default_row(jnp.arange(5)))
    np.testing.assert_array_equal(row, [[-1, -1, -1, -1, 0], [0, -1, -1, -1, 1], [0, -1, -1, 1, 2], [0, -1, 1, 2, 3], [0, 1, 2, 3, 4]])
    r = np.asarray(kv.routed_row(jnp.array([[2, 3, 5]]), 9))
    np.testing.assert_array_equal(r, [[0, 2, 3, 5, 9]])


@pytest.mark.slow  # checks a diagnostic script, not the library; its setup trains a model
def test_diagnostic_streamer_reproduces_the_experiment_generator():
    """experiments/kvpo/diagnose_manifold.py (issue #9) must measure the experiment's own routed branches: its
    per-block-row streamer with the spec rows (m = 0, [sink, S_g, b] in the window) equals ``make_generate``."""
    from experiments.kvpo import diagnose_manifold as dm

    cfg, params, _, (h, _, _, _), bstar = _setup()
    net, prefill, predict, commit = kv.make_model(cfg)
    stream = dm.make_stream(cfg, prefill, predict, commit)
    g = h.shape[0] - 1
    plan = np.asarray(align.dispersed_routing_plan(jax.random.key(4), jnp.arange(1, bstar - 3), g, cfg.subset))
    subsets = np.concatenate([np.zeros((1, cfg.subset), np.int32), plan], 0)
    mask = np.repeat((np.arange(g + 1) > 0)[:, None], cfg.window, 1)
    rows = dm.routed_rows(np.full(g + 1, bstar), subsets, 0, mask, cfg.window, cfg.num_blocks)
    # the routed rows hold the sink, 3 blocks of the pool 1 .. b* - 4 and the block itself, nothing recent
    win = rows[1:, bstar:bstar + cfg.window]
    assert (win[..., 0] == 0).all() and (win[..., 1:4] >= 1).all() and (win[..., 1:4] <= bstar - 4).all()
    h0 = jnp.repeat(kv.sample_sequences(jax.random.key(2), 1, cfg), g + 1, 0)
    noises = jnp.repeat(jax.random.normal(jax.random.key(3), (1, cfg.num_blocks, 2, 2)), g + 1, 0)
    h2 = stream(params, h0, noises, jnp.asarray(rows, jnp.int32))
    np.testing.assert_array_equal(np.asarray(h2), np.asarray(h))
    # lag 0 is the default context
    np.testing.assert_array_equal(dm.lag_rows(np.array([bstar]), 0, cfg.window, cfg.num_blocks),
                                  dm.default_rows(1, cfg.num_blocks))
