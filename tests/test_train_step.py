"""The pure train step and fit: scan fusion changes nothing, non-finite steps are skipped, keys depend on (seed, step)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flowjax.train import create_train_state, fit, make_train_step, step_key


def _loss(params, key, batch):
    noise = jax.random.normal(key, batch.shape) * 0.01
    pred = batch @ params["w"] + params["b"][None, :]
    return jnp.mean((pred - (batch[:, :1] * 2.0 + noise)) ** 2), {"aux": jnp.mean(pred)}


def _params():
    return {"w": jnp.zeros((3, 1)), "b": jnp.zeros((1,))}


def _batch_fn(step):
    return jax.random.normal(jax.random.fold_in(jax.random.key(7), step), (16, 3))


def test_fit_is_independent_of_steps_per_dispatch():
    a, ha = fit(_loss, _params(), batch_fn=_batch_fn, steps=40, key=jax.random.key(0), steps_per_dispatch=1, log_every=10)
    b, hb = fit(_loss, _params(), batch_fn=_batch_fn, steps=40, key=jax.random.key(0), steps_per_dispatch=20, log_every=10)
    np.testing.assert_allclose(a.params["w"], b.params["w"], rtol=1e-5, atol=1e-7)
    assert int(a.step) == int(b.step) == 40
    np.testing.assert_allclose([h["loss"] for h in ha], [h["loss"] for h in hb], rtol=1e-5)
    assert ha[-1]["loss"] < ha[0]["loss"]


def test_nonfinite_step_is_skipped_and_counted():
    opt = optax.adam(1e-2)
    state = create_train_state(_params(), opt, jax.random.key(0))
    step = jax.jit(make_train_step(_loss, opt))
    bad = jnp.full((16, 3), jnp.nan)
    new, metrics = step(state, bad)
    assert not bool(metrics["finite"])
    np.testing.assert_array_equal(new.params["w"], state.params["w"])
    assert int(new.nonfinite_count) == 1 and int(new.step) == 1


def test_nonfinite_step_keeps_params_optimizer_state_and_ema_exactly():
    opt = optax.adam(1e-2)
    step = jax.jit(make_train_step(_loss, opt, ema_decay=0.5))
    good, _ = step(create_train_state(_params(), opt, jax.random.key(0)), _batch_fn(0))  # ema now differs from params
    assert not np.allclose(good.ema_params["w"], good.params["w"])
    new, metrics = step(good, jnp.full((16, 3), jnp.inf))
    assert not bool(metrics["finite"])
    for a, b in zip(jax.tree.leaves((new.params, new.opt_state, new.ema_params)), jax.tree.leaves((good.params, good.opt_state, good.ema_params))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(new.step) == int(good.step) + 1 and int(new.nonfinite_count) == 1


def test_step_key_depends_only_on_seed_and_step():
    opt = optax.sgd(0.1)
    s1 = create_train_state(_params(), opt, jax.random.key(3))
    s2 = s1.replace(step=jnp.array(5, jnp.int32))
    assert not np.array_equal(jax.random.key_data(step_key(s1)), jax.random.key_data(step_key(s2)))
    s3 = create_train_state(_params(), opt, jax.random.key(3)).replace(step=jnp.array(5, jnp.int32))
    np.testing.assert_array_equal(jax.random.key_data(step_key(s2)), jax.random.key_data(step_key(s3)))


def test_ema_tracks_params():
    opt = optax.sgd(0.1)
    state = create_train_state(_params(), opt, jax.random.key(0))
    step = jax.jit(make_train_step(_loss, opt, ema_decay=0.5))
    new, _ = step(state, _batch_fn(0))
    np.testing.assert_allclose(new.ema_params["w"], 0.5 * state.params["w"] + 0.5 * new.params["w"], rtol=1e-6)


def test_training_and_data_streams_share_no_key():
    """Same integer seed for fit and the batcher must not make the loss reuse the data's random bits."""
    from flowjax import keystreams
    from flowjax.data import make_sampler_batch_fn

    seed, k = 3, 11
    state = create_train_state(_params(), optax.sgd(0.1), jax.random.key(seed)).replace(step=jnp.array(k, jnp.int32))
    train = np.asarray(step_key(state))
    plain = np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.key(seed), k)))
    data = np.asarray(jax.random.key_data(make_sampler_batch_fn(lambda key, n: jnp.zeros((n, 1)), 4, seed=seed).key(k)))
    assert not np.array_equal(train, plain) and not np.array_equal(train, data) and not np.array_equal(data, plain)
    np.testing.assert_array_equal(train, np.asarray(keystreams.train_key(jax.random.key_data(jax.random.key(seed)), k)))


def test_loss_noise_is_independent_of_data_drawn_with_the_same_seed():
    """The regression behind `flowjax.keystreams`: a loss and a sampler that split their keys alike
    drew identical numbers (correlation exactly 1) when fit and the batcher got the same seed."""
    from flowjax.data import make_sampler_batch_fn

    n = 512

    def sample(key, m):
        return jax.random.normal(jax.random.split(key, 3)[0], (m, 1))

    def loss(params, key, batch):
        noise = jax.random.normal(jax.random.split(key, 3)[0], (n, 1))
        corr = jnp.corrcoef(noise[:, 0], batch[:, 0])[0, 1]
        return jnp.sum(params["w"] ** 2), {"corr": corr}

    _, hist = fit(loss, {"w": jnp.ones(1)}, batch_fn=make_sampler_batch_fn(sample, n, seed=5), steps=8,
                  key=jax.random.key(5), log_every=1, learning_rate=0.1)
    corrs = np.array([h["corr"] for h in hist])
    assert np.all(np.abs(corrs) < 0.2), corrs  # independent draws: |corr| ~ 1/sqrt(512) = 0.044


def test_convolutional_steps_are_not_scanned_on_cpu():
    """XLA:CPU runs a conv net's train step ~30x slower inside lax.scan (measured), so fit's default keeps
    one step per dispatch for steps with convolutions; MLP steps keep the scan."""
    from flowjax import experiment, losses
    from flowjax.nets import MLP, UNet, init_params
    from flowjax.train.fit import scan_is_slow_for

    opt = optax.adam(1e-3)
    for net, shape, expected in [(UNet(channels=8), (4, 8, 8, 1), True), (MLP(hidden=8, depth=1), (4, 2), False)]:
        params = init_params(net, jax.random.key(0), jnp.zeros(shape)[:2])
        loss = lambda p, k, b, net=net: losses.cfm(experiment.bind(net, p), k, b)
        state = create_train_state(params, opt, jax.random.key(0))
        assert scan_is_slow_for(make_train_step(loss, opt), state, jax.ShapeDtypeStruct(shape, jnp.float32)) is expected
