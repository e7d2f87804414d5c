"""ArcFlow: closed-form policy integration vs quadrature, identities, heads, dropout, loss minimum, LoRA."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.losses.arcflow import (
    ArcPolicy,
    arcflow_distill,
    arcflow_sample,
    component_dropout,
    phi,
    policy_displacement,
    policy_integrate,
    policy_velocity,
    warp_time,
)
from flowjax.nets import MLP, init_params
from flowjax.nets.arcflow import ArcFlowMLP, init_arcflow_from_teacher
from flowjax.nets.lora import apply_lora, init_lora


def random_policy(key, n=6, k=4, d=2, t_s=0.2, rate_scale=3.0):
    k1, k2, k3 = jax.random.split(key, 3)
    means = jax.random.normal(k1, (n, k, d), jnp.float64)
    logits = jax.random.normal(k2, (n, k, 1), jnp.float64)
    rates = rate_scale * jax.random.normal(k3, (n, k, 1), jnp.float64)
    # include an exact zero and tiny rates (the g -> 0 branch) and a negative one
    rates = rates.at[:, 0].set(0.0).at[:, 1].set(3e-7).at[:, 2].set(-2.5)
    return ArcPolicy(means, logits, rates, jnp.full((n,), t_s))


def simpson(policy, t_a, t_b, intervals=1000):
    ts = jnp.linspace(t_a, t_b, intervals + 1)
    vs = jnp.stack([policy_velocity(policy, t) for t in ts])  # (m, n, d)
    w = jnp.ones(intervals + 1).at[1:-1:2].set(4.0).at[2:-1:2].set(2.0)
    return (t_b - t_a) / (3 * intervals) * jnp.tensordot(w, vs, axes=1)


def test_closed_form_matches_simpson_quadrature():
    pol = random_policy(jax.random.key(0))
    for t_a, t_b in [(0.2, 0.7), (0.35, 0.36), (0.5, 0.2)]:
        exact = policy_displacement(pol, t_a, t_b)
        np.testing.assert_allclose(np.asarray(exact), np.asarray(simpson(pol, t_a, t_b)), atol=1e-8)


def test_phi_small_argument_branch_and_code_clamp():
    z = jnp.array([0.0, 1e-9, -3e-6, 5e-5, 1e-3, -2.0, 4.0])
    exact = jnp.where(z == 0, 1.0, jnp.expm1(z) / jnp.where(z == 0, 1.0, z))
    np.testing.assert_allclose(np.asarray(phi(z)), np.asarray(exact), rtol=1e-12)
    clamp_err = float(jnp.max(jnp.abs(phi(z[:3], code_clamp=True) - 1.0)))
    assert 1e-5 < clamp_err <= 5.1e-5  # the code's clamp: relative error up to 5e-5


def test_euler_limit_semigroup_and_velocity_identities():
    pol = random_policy(jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), (6, 2), jnp.float64)
    one = ArcPolicy(pol.means[:, :1], pol.logits[:, :1], jnp.zeros_like(pol.logits[:, :1]), pol.t_s)
    np.testing.assert_allclose(np.asarray(policy_integrate(one, x, 0.2, 0.6)), np.asarray(x + 0.4 * pol.means[:, 0]), atol=1e-14)
    direct = policy_integrate(pol, x, 0.25, 0.8)
    via = policy_integrate(pol, policy_integrate(pol, x, 0.25, 0.5), 0.5, 0.8)
    np.testing.assert_allclose(np.asarray(direct), np.asarray(via), atol=1e-12)
    w = jax.nn.softmax(pol.logits, axis=1)
    np.testing.assert_allclose(np.asarray(policy_velocity(pol, 0.2)), np.asarray(jnp.sum(w * pol.means, 1)), atol=1e-14)
    _, dxdt = jax.jvp(lambda t: policy_integrate(pol, x, 0.25, t), (jnp.asarray(0.6),), (jnp.asarray(1.0),))
    np.testing.assert_allclose(np.asarray(dxdt), np.asarray(policy_velocity(pol, 0.6)), atol=1e-10)


def test_warp_convention():
    r = jnp.linspace(0, 1, 11)
    sigma = 3.2 * r / (1 + 2.2 * r)
    np.testing.assert_allclose(np.asarray(warp_time(1 - r, 3.2)), np.asarray(1 - sigma), atol=1e-14)
    assert float(warp_time(0.0)) == 0.0 and float(warp_time(1.0)) == 1.0


def test_heads_init_equal_teacher_and_dropout_never_drops_all():
    teacher = MLP(hidden=16, depth=2)
    tp = init_params(teacher, jax.random.key(0), jnp.zeros((2, 2)))
    net = ArcFlowMLP(hidden=16, depth=2, num_components=4)
    ap = init_arcflow_from_teacher(net.init(jax.random.key(1), jnp.zeros((2, 2)), jnp.zeros((2,))), tp, noise_std=0.0)
    x = jax.random.normal(jax.random.key(2), (5, 2))
    t = jnp.full((5,), 0.4)
    pol = net.apply(ap, x, t)
    np.testing.assert_allclose(np.asarray(policy_velocity(pol, t)), np.asarray(teacher.apply(tp, x, t)), atol=1e-6)
    assert float(pol.log_rates[0, 0, 0]) == 0.0
    np.testing.assert_allclose(np.exp(np.asarray(pol.log_rates[0, 1:, 0])), [0.2, np.sqrt(0.8), 4.0], rtol=1e-5)
    small = ArcPolicy(jnp.ones((4000, 2, 1)), jnp.zeros((4000, 2, 1)), jnp.zeros((4000, 2, 1)), jnp.zeros(4000))
    dropped = component_dropout(jax.random.key(3), small, p=0.9)
    assert bool(jnp.all(jnp.any(jnp.isfinite(dropped.logits), axis=1)))
    # K = 2: a logit is dropped only when its partner survives: fraction p (1 - p) = 0.09.
    assert abs(float(jnp.mean(jnp.isinf(dropped.logits))) - 0.09) < 0.015


def test_distill_loss_zero_with_zero_gradient_when_policy_is_exact():
    b = jnp.array([0.7, -1.2])
    teacher = lambda x, t: jnp.broadcast_to(b, x.shape)

    def policy_fn(eps):
        def fn(x, t):
            n = x.shape[0]
            means = jnp.broadcast_to(b, (n, 1, 2)) + eps * jnp.sin(x)[:, None]
            return ArcPolicy(means, jnp.zeros((n, 1, 1)), jnp.zeros((n, 1, 1)), t)
        return fn

    x0 = jax.random.normal(jax.random.key(4), (32, 2), jnp.float64)
    loss, aux = arcflow_distill(policy_fn(0.0), jax.random.key(5), x0, teacher=teacher, teacher_ratio=0.5)
    assert float(loss) < 1e-24 and set(aux) == {"segment0", "segment1"}
    g = jax.grad(lambda e: arcflow_distill(policy_fn(e), jax.random.key(5), x0, teacher=teacher)[0])(0.0)
    assert abs(float(g)) < 1e-12
    assert float(arcflow_distill(policy_fn(0.1), jax.random.key(5), x0, teacher=teacher)[0]) > 1e-5
    out = arcflow_sample(policy_fn(0.0), x0, nfe=2)
    np.testing.assert_allclose(np.asarray(out), np.asarray(x0 + b[None]), atol=1e-12)


def test_lora_identity_at_init_and_gradients():
    net = MLP(hidden=16, depth=2)
    params = init_params(net, jax.random.key(0), jnp.zeros((2, 2)))
    lora = init_lora(jax.random.key(1), params, rank=4)
    assert all(v["b"].shape[0] <= 4 for v in lora.values()) and "['params']['dense_0']['kernel']" in lora
    merged = apply_lora(params, lora)
    assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(merged)))
    x = jax.random.normal(jax.random.key(2), (8, 2))
    t = jnp.full((8,), 0.5)
    loss = lambda lo: jnp.sum(net.apply(apply_lora(params, lo), x, t) ** 2)
    g = jax.grad(loss)(lora)
    name = "['params']['dense_1']['kernel']"
    assert float(jnp.max(jnp.abs(g[name]["a"]))) == 0.0  # b = 0 at init
    assert float(jnp.max(jnp.abs(g[name]["b"]))) > 0.0
    lora2 = jax.tree.map(lambda a: a + 0.1, lora)
    w = params["params"]["dense_1"]["kernel"] + lora2[name]["a"] @ lora2[name]["b"]
    np.testing.assert_allclose(np.asarray(apply_lora(params, lora2)["params"]["dense_1"]["kernel"]), np.asarray(w), rtol=1e-6)
    with pytest.raises(ValueError, match="not in the pytree"):
        apply_lora(params, {"['nope']": lora[name]})
