"""FlowV2V shape-consistent flow calibration (SCFC; derived, spec flowv2v.md §3.3): the calibration
network is the identity at initialisation and outside its region, the region and the L1 loss
match hand computations, and training on a toy with a known, systematic pseudo-flow error
removes most of that error."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowjax import physical

H = W = 16


def _toy(key, n):
    """Random rectangles moving by a random d: true flow d on the mask; the pseudo flow is 0.5 d (known error)."""
    k = jax.random.split(key, 4)
    r0 = jax.random.randint(k[0], (n,), 3, 8)
    c0 = jax.random.randint(k[1], (n,), 3, 8)
    rows, cols = jnp.meshgrid(jnp.arange(H), jnp.arange(W), indexing="ij")
    mask = ((rows[None] >= r0[:, None, None]) & (rows[None] < r0[:, None, None] + 5)
            & (cols[None] >= c0[:, None, None]) & (cols[None] < c0[:, None, None] + 4)).astype(jnp.float32)
    d = jax.random.uniform(k[2], (n, 2), minval=-2.0, maxval=2.0)
    true = mask[..., None] * d[:, None, None, :]
    image = jax.random.uniform(k[3], (n, H, W, 3))
    return {"pseudo_flow": 0.5 * true, "target_flow": true, "edit_mask": mask, "source_mask": mask, "image": image}


@pytest.fixture(scope="module")
def toy():
    return _toy(jax.random.key(0), 16)


def test_zero_init_is_identity_and_region_gates(toy):
    net = physical.FlowCalibrationNet(channels=8)
    args = (toy["pseudo_flow"], toy["edit_mask"], toy["image"], toy["source_mask"])
    params = jax.jit(net.init)(jax.random.key(1), *args)
    apply = jax.jit(net.apply)
    np.testing.assert_array_equal(apply(params, *args), toy["pseudo_flow"])
    # random (nonzero) last layer: the flow changes only inside the dilated union of the masks
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree.unflatten(tree, [l + 0.3 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)])
    out = apply(params, *args)
    region = physical.calibration_region(toy["edit_mask"], toy["source_mask"], dilation=net.dilation)
    outside = np.asarray(region) == 0
    np.testing.assert_array_equal(np.asarray(out)[outside], np.asarray(toy["pseudo_flow"])[outside])
    assert float(jnp.max(jnp.abs(out - toy["pseudo_flow"]))) > 1e-3


def test_calibration_region_is_dilated_union():
    a = jnp.zeros((H, W)).at[4, 4].set(1.0)
    b = jnp.zeros((H, W)).at[10, 12].set(1.0)
    r = physical.calibration_region(a, b, dilation=3)
    expect = np.zeros((H, W))
    expect[3:6, 3:6] = 1
    expect[9:12, 11:14] = 1
    np.testing.assert_array_equal(r, expect)
    # batched masks give the per-image regions
    rb = physical.calibration_region(jnp.stack([a, b]), jnp.stack([b, a]), dilation=3)
    np.testing.assert_array_equal(rb[0], expect)
    np.testing.assert_array_equal(rb[1], expect)
    with pytest.raises(ValueError, match="odd"):
        physical.calibration_region(a, b, dilation=4)
    with pytest.raises(ValueError, match="same shape"):
        physical.calibration_region(a, b[:4])


def test_loss_matches_hand_computation(toy):
    ident = lambda f, m, im, ms: f  # noqa: E731
    loss, aux = physical.flow_calibration_loss(ident, None, toy, dilation=3)
    r = np.asarray(physical.calibration_region(toy["edit_mask"], toy["source_mask"], dilation=3))
    err = np.abs(np.asarray(toy["pseudo_flow"]) - np.asarray(toy["target_flow"])).sum(-1)
    np.testing.assert_allclose(loss, (r * err).sum() / r.sum(), rtol=1e-6)
    np.testing.assert_allclose(aux["l1_pseudo"], loss, rtol=1e-6)
    oracle = lambda f, m, im, ms: toy["target_flow"]  # noqa: E731
    loss0, aux0 = physical.flow_calibration_loss(oracle, None, toy, dilation=3)
    assert float(loss0) == 0.0 and float(aux0["epe_calibrated"]) < 1e-5
    with pytest.raises(KeyError, match="target_flow"):
        physical.flow_calibration_loss(ident, None, {k: v for k, v in toy.items() if k != "target_flow"})
    with pytest.raises(ValueError, match="target_flow"):
        physical.flow_calibration_loss(ident, None, dict(toy, target_flow=toy["target_flow"][:2]))


def test_net_shape_errors(toy):
    net = physical.FlowCalibrationNet(channels=4)
    with pytest.raises(ValueError, match="pseudo_flow"):
        net.init(jax.random.key(0), toy["pseudo_flow"][..., :1], toy["edit_mask"], toy["image"], toy["source_mask"])
    with pytest.raises(ValueError, match="edit_mask"):
        net.init(jax.random.key(0), toy["pseudo_flow"], toy["edit_mask"][:2], toy["image"], toy["source_mask"])
    with pytest.raises(ValueError, match="source_flow"):
        net.init(jax.random.key(0), toy["pseudo_flow"], toy["edit_mask"], toy["image"], toy["source_mask"],
                 toy["pseudo_flow"][:2])


@pytest.mark.slow  # ~20-40 s; runs with -m slow
def test_training_reduces_known_flow_error(toy):
    net = physical.FlowCalibrationNet(channels=8)
    args = (toy["pseudo_flow"], toy["edit_mask"], toy["image"], toy["source_mask"])
    params = jax.jit(net.init)(jax.random.key(1), *args)
    opt = optax.adam(3e-3)
    loss_fn = lambda p, batch: physical.flow_calibration_loss(partial(net.apply, p), None, batch)  # noqa: E731

    @jax.jit
    def train(params):
        def step(carry, i):
            p, s = carry
            batch = _toy(jax.random.fold_in(jax.random.key(7), i), 16)
            (loss, _), g = jax.value_and_grad(loss_fn, has_aux=True)(p, batch)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss
        (p, _), losses = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(300))
        return p, losses

    trained, _ = train(params)
    test = _toy(jax.random.key(123), 32)  # held-out toy batch
    before, aux_b = loss_fn(params, test)
    after, aux_a = loss_fn(trained, test)
    np.testing.assert_allclose(before, aux_b["l1_pseudo"], rtol=1e-6)  # identity at init
    assert float(after) < 0.35 * float(before), (float(before), float(after))
    assert float(aux_a["epe_calibrated"]) < 0.35 * float(aux_a["epe_pseudo"])
