"""GestureLSM toy data and net (experiments/gesturelsm)."""


def test_synthetic_gestures_are_coherent_and_step_embedding_starts_as_a_no_op():
    import jax
    import jax.numpy as jnp

    from experiments.gesturelsm.config import get_config
    from experiments.gesturelsm.main import GestureNet, coherence, sequences

    cfg = get_config("smoke")
    data = sequences(jax.random.key(0), 256, cfg)
    assert coherence(data["x"], data["c"], cfg) > 0.99  # one hidden mode shared by the three regions
    assert data["c"].shape == (256, cfg.frames) and float(data["c"].max()) >= 1.0
    for joint in (True, False):
        net = GestureNet(16, 2, 8, cfg.regions, joint=joint)
        dim = data["x"].shape[1]
        p = net.init(jax.random.key(1), data["x"][:4], jnp.zeros(4), jnp.zeros(4), c=data["c"][:4])
        s = jnp.full((4,), 0.25)
        a = net.apply(p, data["x"][:4], s, s + 0.5, c=data["c"][:4])
        b = net.apply(p, data["x"][:4], s, s + 0.125, c=data["c"][:4])
        assert a.shape == (4, dim)
        assert float(jnp.max(jnp.abs(a - b))) < 1e-6  # zero-init step branch: independent of d at init
