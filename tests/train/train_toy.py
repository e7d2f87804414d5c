"""A tiny MLP regression problem shared by the training tests and their subprocess runs.

Plain jnp (no flax), deterministic data from (seed, step): batch_fn(step) draws from
``fold_in(PRNGKey(seed), step)`` so the data position is the step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

DIM = 3
HIDDEN = 16
BATCH = 16


def init_params(key, dim=DIM, hidden=HIDDEN):
    k1, k2 = jax.random.split(key)
    return {
        "l1": {"w": jax.random.normal(k1, (dim + 1, hidden)) / np.sqrt(dim + 1), "b": jnp.zeros((hidden,))},
        "l2": {"w": jax.random.normal(k2, (hidden, dim)) / np.sqrt(hidden), "b": jnp.zeros((dim,))},
    }


def velocity(params, x, t):
    h = jnp.concatenate([x, t[:, None]], axis=-1)
    h = jnp.tanh(h @ params["l1"]["w"] + params["l1"]["b"][None, :])
    return h @ params["l2"]["w"] + params["l2"]["b"][None, :]


def loss_fn(params, key, batch):
    """Conditional flow matching on a linear path (toy): ||v(x_t, t) - (x1 - x0)||^2."""
    x1 = batch["x"]
    k0, kt = jax.random.split(key)
    x0 = jax.random.normal(k0, x1.shape, x1.dtype)
    t = jax.random.uniform(kt, (x1.shape[0],), x1.dtype)
    xt = t[:, None] * x1 + (1.0 - t[:, None]) * x0
    err = velocity(params, xt, t) - (x1 - x0)
    loss = jnp.mean(jnp.sum(err**2, axis=-1))
    return loss, {"mse_x1": jnp.mean(x1**2)}


def make_batch_fn(seed=0, batch=BATCH, dim=DIM, nan_at=None):
    """Numpy batches, a pure function of the step (host data, like a real loader)."""

    def batch_fn(step):
        rng = np.random.default_rng([seed, int(step)])
        x = rng.normal(size=(batch, dim)) * 0.5 + 1.0
        if nan_at is not None and int(step) == nan_at:
            x[0, 0] = np.nan
        return {"x": x.astype(np.float64)}

    return batch_fn


class CountingIterator:
    """A grain-style iterator with JSON get_state/set_state (its position)."""

    def __init__(self, seed=0, batch=BATCH, dim=DIM):
        self._fn = make_batch_fn(seed, batch, dim)
        self.position = 0

    def __iter__(self):
        return self

    def __next__(self):
        b = self._fn(1000 + self.position)
        self.position += 1
        return b

    def get_state(self):
        return {"position": self.position}

    def set_state(self, state):
        self.position = int(state["position"])
