"""Time samplers: ranges, distributions, interval pairs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from flowjax import timesteps


@pytest.mark.parametrize(
    "sampler,cdf",
    [
        (timesteps.uniform(), stats.uniform.cdf),
        (timesteps.beta(2.0, 1.2), stats.beta(2.0, 1.2).cdf),
        (timesteps.beta(0.3, 0.5), stats.beta(0.3, 0.5).cdf),  # shapes < 1: the log-space path
        (timesteps.beta(8.0, 2.0), stats.beta(8.0, 2.0).cdf),
        (timesteps.logit_normal(0.5, 0.8), lambda t: stats.norm(0.5, 0.8).cdf(np.log(t / (1 - t)))),
    ],
)
def test_distributions_match_by_ks(sampler, cdf):
    t = np.asarray(sampler(jax.random.key(0), 20000))
    assert t.min() >= 0 and t.max() <= 1
    assert stats.kstest(t, cdf).pvalue > 1e-3


def test_mode_sampler_zero_scale_is_uniform():
    t = np.asarray(timesteps.mode(0.0)(jax.random.key(1), 20000))
    assert stats.kstest(t, stats.uniform.cdf).pvalue > 1e-3


def test_shift_moves_mass_towards_noise():
    base = timesteps.uniform()
    t0 = timesteps.shifted(base, 1.0)(jax.random.key(2), 1000)
    np.testing.assert_allclose(t0, base(jax.random.key(2), 1000), rtol=1e-6)
    t3 = timesteps.shifted(base, 3.0)(jax.random.key(2), 1000)
    assert float(t3.mean()) < float(t0.mean()) - 0.1


def test_interval_pairs():
    s, t = timesteps.interval_pairs(equal_fraction=0.25)(jax.random.key(3), 20000)
    assert bool(jnp.all(s <= t))
    np.testing.assert_allclose(float(jnp.mean(s == t)), 0.25, atol=0.015)
    s1, t1 = timesteps.interval_pairs(equal_fraction=1.0)(jax.random.key(3), 100)
    np.testing.assert_array_equal(s1, t1)


def test_bad_parameters():
    with pytest.raises(ValueError):
        timesteps.uniform(0.5, 0.2)
    with pytest.raises(ValueError):
        timesteps.logit_normal(0.0, -1.0)
    with pytest.raises(ValueError):
        timesteps.interval_pairs(equal_fraction=1.5)
    with pytest.raises(ValueError):
        timesteps.sampler_by_name("cosine")
