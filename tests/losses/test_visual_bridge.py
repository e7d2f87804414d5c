"""Visual Bridge (spec visual-bridge.md section 6): target, exact linear bridge, task embedding, task isolation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.losses.visual_bridge import bridge_predict, linear_bridge_velocity, visual_bridge
from flowjax.nets.visual_bridge import BridgeMixer, TaskEmbedding, circular_task_features


def test_path_endpoints_and_target():
    """x_t at t = 0 is the source, at t = 1 the target; the regression target is x1 - x0."""
    x0 = jax.random.normal(jax.random.key(0), (4, 3, 2))
    x1 = jax.random.normal(jax.random.key(1), (4, 3, 2))
    seen = {}

    def v_fn(x, t):
        seen["x"], seen["t"] = x, t
        return x1 - x0  # the exact conditional velocity: loss 0

    for t_val in (0.0, 1.0):
        loss, _ = visual_bridge(v_fn, jax.random.key(2), x1, x0=x0, time_sampler=lambda k, n: jnp.full((n,), t_val))
        np.testing.assert_allclose(seen["x"], x0 if t_val == 0.0 else x1, atol=1e-12)
        assert float(loss) == 0.0
    loss, _ = visual_bridge(lambda x, t: jnp.zeros_like(x), jax.random.key(3), x1, x0=x0)
    np.testing.assert_allclose(float(loss), float(jnp.mean((x1 - x0) ** 2)), rtol=1e-12)


def _near_identity(key, d):
    return jnp.eye(d) + 0.5 * jax.random.normal(key, (d, d)) / jnp.sqrt(d)


def test_linear_bridge_exact_velocity_transports_and_is_loss_minimiser():
    d = 4
    a = _near_identity(jax.random.key(4), d)
    assert float(jnp.min(jnp.real(jnp.linalg.eigvals(a)))) > 0  # no eigenvalue on (-inf, 0]
    v = linear_bridge_velocity(a)
    x0 = jax.random.normal(jax.random.key(5), (6, d))
    x1 = bridge_predict(v, x0, steps=16, solver="rk4")
    np.testing.assert_allclose(x1, x0 @ a.T, atol=1e-6)  # integrating v maps x0 to A x0
    # v(x_t, t) equals the conditional target x1 - x0 exactly (deterministic bridge): the loss is 0 ...
    loss, _ = visual_bridge(v, jax.random.key(6), x0 @ a.T, x0=x0)
    assert float(loss) < 1e-20
    # ... and any perturbation of the field increases it
    loss_pert, _ = visual_bridge(lambda x, t: v(x, t) + 1e-3, jax.random.key(6), x0 @ a.T, x0=x0)
    assert float(loss_pert) > 1e-7


def test_circular_task_embedding_distinct_and_periodic():
    k = 5
    feats = circular_task_features(jnp.arange(2 * k), k, frequencies=3)
    np.testing.assert_allclose(feats[:k], feats[k:], atol=1e-5)  # period K
    dists = jnp.linalg.norm(feats[:k, None] - feats[None, :k], axis=-1)
    assert float(jnp.min(dists + 10 * jnp.eye(k))) > 0.1  # distinct tasks, distinct features
    emb = TaskEmbedding(16, k)
    params = emb.init(jax.random.key(7), jnp.arange(k))
    e = jax.jit(emb.apply)(params, jnp.arange(2 * k))
    np.testing.assert_allclose(e[:k], e[k:], atol=1e-5)
    assert float(jnp.min(jnp.linalg.norm(e[:k, None] - e[None, :k], axis=-1) + 10 * jnp.eye(k))) > 1e-4
    table = TaskEmbedding(16, k, kind="table")
    et = table.apply(table.init(jax.random.key(8), jnp.arange(k)), jnp.arange(k))
    assert et.shape == (k, 16)


def test_task_isolation_mixed_vs_single_task_batches():
    net = BridgeMixer(dim=16, token_hidden=8, channel_hidden=16, num_tasks=3)
    x = jax.random.normal(jax.random.key(9), (6, 5, 4))
    t = jnp.linspace(0.1, 0.9, 6)
    task = jnp.array([0, 1, 2, 0, 1, 2])
    params = net.init(jax.random.key(10), x, t, c=task)
    apply = jax.jit(lambda x, t, c: net.apply(params, x, t, c=c))
    mixed = apply(x, t, task)
    for k in range(3):
        idx = np.flatnonzero(np.asarray(task) == k)
        single = apply(x[idx], t[idx], jnp.full((len(idx),), k))
        np.testing.assert_allclose(mixed[idx], single, atol=1e-5)
    other = apply(x, t, (task + 1) % 3)
    assert float(jnp.max(jnp.abs(other - mixed))) > 1e-4  # changing the task id changes the output
    with pytest.raises(ValueError, match="task"):
        net.apply(params, x, t)


def test_per_task_aux_and_validation():
    x0 = jax.random.normal(jax.random.key(11), (6, 2, 3))
    x1 = x0 + 1.0
    task = jnp.array([0, 0, 1, 1, 2, 2])
    v = lambda x, t, c: jnp.where((c == 0)[:, None, None], 1.0, 0.0) * jnp.ones_like(x)  # exact only for task 0
    loss, aux = visual_bridge(v, jax.random.key(12), x1, x0=x0, task=task, num_tasks=3)
    assert float(aux["loss_task0"]) < 1e-20 and abs(float(aux["loss_task1"]) - 1.0) < 1e-12
    assert abs(float(loss) - 2.0 / 3.0) < 1e-12
    with pytest.raises(ValueError, match="x0"):
        visual_bridge(v, jax.random.key(0), x1, x0=x0[:3], task=task)
    with pytest.raises(ValueError, match="task"):
        visual_bridge(v, jax.random.key(0), x1, x0=x0, task=jnp.zeros((6,)))
