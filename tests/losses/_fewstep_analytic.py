"""Closed-form flow for Gaussian data N(mu, diag(sig^2)) from N(0, I) on the linear path.

a_t^2 = (1 - t)^2 + t^2 sig^2, X_{s,t}(x) = t mu + (a_t / a_s)(x - s mu),
v(x, t) = mu + (a_t' / a_t)(x - t mu), a_t' = (t sig^2 - (1 - t)) / a_t, u = (X - x) / (t - s).
sig = 0 is a point mass: the flow is straight and the conditional velocity equals the marginal one.
"""

from __future__ import annotations

import jax.numpy as jnp


class AnalyticGaussian:
    def __init__(self, mu, sig):
        self.mu = jnp.asarray(mu, jnp.float64)[None]  # (1, d)
        self.sig = jnp.asarray(sig, jnp.float64)[None]

    def a(self, t):
        t = t[:, None]
        return jnp.sqrt((1 - t) ** 2 + t**2 * self.sig**2)

    def flow_map(self, x, s, t):
        return t[:, None] * self.mu + self.a(t) / self.a(s) * (x - s[:, None] * self.mu)

    def velocity(self, x, t):
        a = self.a(t)
        da = (t[:, None] * self.sig**2 - (1 - t[:, None])) / a
        return self.mu + da / a * (x - t[:, None] * self.mu)

    def u(self, x, s, t):
        same = (t == s)[:, None]
        gap = jnp.where(same, 1.0, (t - s)[:, None])
        moved = (self.flow_map(x, s, t) - x) / gap
        return jnp.where(same, self.velocity(x, t), moved)

    def sample_data(self, key, n):
        import jax

        return self.mu + self.sig * jax.random.normal(key, (n, self.mu.shape[1]), jnp.float64)
