"""conditional-source's S_phi options: the table's scale reparametrisation keeps mu's initialisation
and multiplies its gradient; bad options fail before any work."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.conditional_source.config import get_config
from experiments.conditional_source.main import make_source


def _table(scale, init_std=0.5):
    cfg = get_config("smoke")
    cfg.table_scale, cfg.table_mean_init_std = scale, init_std
    return make_source(cfg)


def test_table_scale_keeps_the_initial_mean_and_scales_the_gradient():
    labels = jnp.arange(8)
    (init1, apply1), (init10, apply10) = _table(1.0), _table(10.0)
    p1, p10 = init1(jax.random.key(0)), init10(jax.random.key(0))
    mu1, lv1 = apply1(p1, labels)
    mu10, lv10 = apply10(p10, labels)
    # same draws, E's std divided by the scale: mu at initialisation is the same
    np.testing.assert_allclose(mu10, mu1, rtol=1e-6)
    np.testing.assert_array_equal(lv10, lv1)
    assert 0.2 < float(jnp.std(mu1)) < 1.0  # normal(0.5) init, 16 entries
    # d loss / d E = scale * d loss / d mu: the table's raw gradient is scale times larger
    g1 = jax.grad(lambda p: jnp.sum(apply1(p, labels)[0] ** 2 / 2))(p1)
    g10 = jax.grad(lambda p: jnp.sum(apply10(p, labels)[0] ** 2 / 2))(p10)
    e1, e10 = (np.asarray(g["params"]["mean"]["embedding"]) for g in (g1, g10))
    assert np.all(np.abs(e1) > 0)
    np.testing.assert_allclose(e10, 10.0 * e1, rtol=1e-5)


def test_zero_init_table_is_the_standard_source():
    init, apply = _table(1.0, init_std=0.0)
    mu, lv = apply(init(jax.random.key(1)), jnp.arange(8))
    assert float(jnp.max(jnp.abs(mu))) == 0.0


@pytest.mark.parametrize("key,value", [("table_scale", 0.0), ("source_net", "mlp")])
def test_bad_source_options_raise(key, value):
    cfg = get_config("smoke")
    cfg[key] = value
    with pytest.raises(ValueError, match=key):
        make_source(cfg)
