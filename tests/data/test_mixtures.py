"""Gaussian mixtures: presets, the oracle wiring, exact moments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.data import (
    MIXTURE_PRESETS,
    make_mixture,
    mixture_flow,
    mixture_moments,
    mixture_preset,
    random_mixture,
    sample_mixture,
    sample_toy2d,
)
from flowjax.testing import GaussianMixtureFlow


@pytest.mark.parametrize("name", MIXTURE_PRESETS)
def test_presets_sample_with_exact_moments(name):
    p = mixture_preset(name, dtype=jnp.float64)
    assert p.weights.sum() == pytest.approx(1.0)
    x = np.asarray(sample_mixture(p, jax.random.key(0), 100_000))
    assert x.shape == (100_000, p.dim)
    mean, cov = mixture_moments(p)
    # 100k samples, unit-ish scale: standard errors ~ 0.005-0.01
    np.testing.assert_allclose(x.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(x.T).reshape(p.dim, p.dim), cov, atol=0.05)


def test_sampler_is_the_oracle():
    p = mixture_preset("gm1d_asymmetric")
    flow = mixture_flow(p)
    assert isinstance(flow, GaussianMixtureFlow)
    key = jax.random.key(4)
    # jit (ours) vs eager (oracle) may round the affine map differently (FMA): last-ulp agreement
    np.testing.assert_allclose(sample_mixture(p, key, 50), flow.sample_data(key, 50), rtol=1e-6, atol=1e-6)
    # the density at t=1 integrates to one on a grid (1D)
    g = jnp.linspace(-6.0, 8.0, 1401)[:, None]
    dens = jnp.exp(jax.jit(flow.log_prob)(g, 1.0))
    assert float(jnp.sum(dens) * (g[1, 0] - g[0, 0])) == pytest.approx(1.0, abs=1e-4)


def test_gm2d_8_matches_toy_8gaussians():
    p = mixture_preset("gm2d_8")
    mean, cov = mixture_moments(p)
    np.testing.assert_allclose(mean, 0.0, atol=1e-6)
    np.testing.assert_allclose(np.trace(np.asarray(cov)) / 2, 1.0, atol=1e-6)
    x = sample_toy2d("8gaussians", jax.random.key(1), 20_000)
    # toy samples have high likelihood under the preset, equal to the preset's own samples on average
    flow = mixture_flow(p)
    mean_ll = jax.jit(lambda y: jnp.mean(flow.log_prob(y)))
    ll_toy = float(mean_ll(x))
    ll_own = float(mean_ll(sample_mixture(p, jax.random.key(2), 20_000)))
    assert ll_toy == pytest.approx(ll_own, abs=0.03)


def test_random_mixture():
    a = random_mixture(jax.random.key(0), dim=5, num_components=3)
    b = random_mixture(jax.random.key(0), dim=5, num_components=3)
    c = random_mixture(jax.random.key(1), dim=5, num_components=3, equal_weights=False)
    np.testing.assert_array_equal(a.means, b.means)
    assert a.means.shape == (3, 5) and a.stds.shape == (3, 5)
    assert not np.allclose(a.means, c.means)
    assert float(c.weights.sum()) == pytest.approx(1.0, abs=1e-6) and not np.allclose(c.weights, 1 / 3)
    assert sample_mixture(c, jax.random.key(0), 7).shape == (7, 5)


def test_validation():
    with pytest.raises(ValueError, match="name"):
        mixture_preset("gm3d")
    with pytest.raises(ValueError, match="stds"):
        make_mixture([[0.0]], [-1.0], [1.0])
    with pytest.raises(ValueError, match="weights"):
        make_mixture([[0.0], [1.0]], [1.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        make_mixture([[np.nan]], [1.0], [1.0])
