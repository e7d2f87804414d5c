"""Autoencoder for latent FM: latent scaling, round trips, local checkpoint loading; CFG identities."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.latent_fm.main import cfg_velocity
from flowjax.nets.autoencoder import ConvAutoencoder, LatentAutoencoder, load_pretrained, save_checkpoint


@pytest.fixture(scope="module")
def ae_and_data():
    x = jax.random.uniform(jax.random.key(0), (40, 8, 8, 1), minval=-1, maxval=1)
    module = ConvAutoencoder(latent_dim=4, channels=4)
    params = module.init(jax.random.key(1), x[:2])
    return LatentAutoencoder(module, params).with_latent_scaling(x), x


def test_latent_scaling_unit_std_and_round_trip(ae_and_data):
    ae, x = ae_and_data
    z = np.asarray(ae.encode(x), np.float64)
    np.testing.assert_allclose(z.std(0), 1.0, rtol=1e-4)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
    # scaling cancels exactly: decode(encode(x)) == D(E(x)) of the unscaled module
    np.testing.assert_allclose(ae.decode(ae.encode(x)), ae.module.apply(ae.params, x), atol=1e-5)
    # latent -> image -> latent is not the identity for an untrained AE, but encode is deterministic
    np.testing.assert_array_equal(ae.encode(x), ae.encode(x))


def test_checkpoint_round_trip_and_user_module(ae_and_data, tmp_path):
    ae, x = ae_and_data
    path = ae.save(tmp_path / "ae.npz", config=dict(image_shape=[8, 8, 1], latent_dim=4, channels=4))
    loaded = load_pretrained(path)  # rebuilt from the stored config
    np.testing.assert_array_equal(loaded.encode(x), ae.encode(x))
    np.testing.assert_array_equal(loaded.decode(ae.encode(x)), ae.decode(ae.encode(x)))
    # a user's module passed explicitly
    loaded2 = load_pretrained(path, ConvAutoencoder(latent_dim=4, channels=4))
    np.testing.assert_array_equal(loaded2.encode(x), ae.encode(x))


def test_checkpoint_mismatch_and_missing_file(ae_and_data, tmp_path):
    ae, _ = ae_and_data
    path = save_checkpoint(tmp_path / "ae.npz", ae.params)
    with pytest.raises(ValueError, match="does not match"):
        load_pretrained(path, ConvAutoencoder(latent_dim=6, channels=4))
    with pytest.raises(FileNotFoundError, match="path"):
        load_pretrained(tmp_path / "nope.npz")


def test_cfg_velocity_identities():
    def v(x, t, c):
        return x * t[:, None] + c[:, None].astype(x.dtype)

    x, t, c = jnp.ones((3, 2)), jnp.full((3,), 0.5), jnp.array([1, 2, 3])
    null = 10
    np.testing.assert_allclose(cfg_velocity(v, guidance=1.0, null_label=null)(x, t, c), v(x, t, c))
    np.testing.assert_allclose(cfg_velocity(v, guidance=0.0, null_label=null)(x, t, c), v(x, t, jnp.full_like(c, null)))
    a, b, m = (cfg_velocity(v, guidance=w, null_label=null)(x, t, c) for w in (0.5, 2.5, 1.5))
    np.testing.assert_allclose(m, 0.5 * (a + b))  # linear in w
