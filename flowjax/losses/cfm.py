"""Conditional flow matching (Lipman et al. 2210.02747; Tong et al. 2302.00482 for OT couplings).

With a coupling ``(x0, x1) ~ pi``, a time ``t ~ p(t)`` and an affine path
``x_t = alpha_t x1 + sigma_t x0``, the network is regressed onto the conditional target:

    velocity:  L = E w(t) | v_theta(x_t, t) - (alpha'_t x1 + sigma'_t x0) |^2
    data:      L = E w(t) | x1_theta(x_t, t) - x1 |^2
    noise:     L = E w(t) | x0_theta(x_t, t) - x0 |^2

Each minimiser is the corresponding posterior mean ``E[. | x_t]``; for ``"velocity"`` that is the
marginal velocity ``v(x, t)`` of the path (the flow-matching theorem). Errors are averaged over
feature dimensions and the batch.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks
from flowjax.couplings import Coupling, independent
from flowjax.paths import AffinePath, linear_path
from flowjax.timesteps import TimeSampler, uniform

Weighting = Callable[[Array], Array]
PREDICTIONS = ("velocity", "data", "noise")


def mean_squared(err: Array) -> Array:
    """Per-sample mean of squares over all non-batch axes."""
    return jnp.mean(err.reshape(err.shape[0], -1) ** 2, axis=-1)


def call_with_condition(fn: Callable, *args: Any, c: Any = None) -> Array:
    """Call a model ``fn(*args)``, passing ``c=`` only when a condition is given."""
    return fn(*args) if c is None else fn(*args, c=c)


def labels_for_coupling(c: Any) -> Array | None:
    """Integer class labels of shape (n,) are handed to the coupling (OT then pairs within a class)."""
    if c is not None and hasattr(c, "dtype") and jnp.issubdtype(c.dtype, jnp.integer) and c.ndim == 1:
        return c
    return None


def gather_condition(c: Any, idx: Array) -> Any:
    return None if c is None else jax.tree.map(lambda a: a[idx], c)


def cfm(
    v_fn: Callable[..., Array],
    key: Array,
    x1: Array,
    *,
    x0: Array | None = None,
    path: AffinePath | None = None,
    coupling: Coupling | None = None,
    time_sampler: TimeSampler | None = None,
    prediction: str = "velocity",
    weighting: Weighting | None = None,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """Conditional flow-matching loss.

    Args:
      v_fn: the model, ``v_fn(x_t, t) -> prediction`` (``t`` of shape ``(n,)``), or
        ``v_fn(x_t, t, c=c)`` when a condition is given.
      key: PRNG key.
      x1: data batch ``(n, ...)``.
      x0: source batch of the same shape; default standard Gaussian noise.
      path: affine path (default :func:`flowjax.paths.linear_path`).
      coupling: pairing of ``x0`` and ``x1`` (default independent); integer labels ``c`` of shape
        ``(n,)`` are passed to it, so OT couplings pair within a class.
      time_sampler: ``t ~ p(t)`` (default uniform).
      prediction: what ``v_fn`` outputs: ``"velocity"``, ``"data"`` (x1) or ``"noise"`` (x0).
      weighting: optional per-sample weight ``w(t)``.
      c: condition passed to ``v_fn`` as ``c=`` (array or pytree with leading batch axis).

    Returns:
      ``(loss, {"mse": unweighted mean squared error})``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> v = lambda x, t: jnp.zeros_like(x)
      >>> loss, aux = cfm(v, jax.random.key(0), jnp.ones((8, 2)))
    """
    _checks.check_float_array("x1", x1, min_ndim=1)
    _checks.check_choice("prediction", prediction, PREDICTIONS)
    n = x1.shape[0]
    if x0 is not None:
        _checks.check_float_array("x0", x0, min_ndim=1)
        _checks.check_same_shape("x0", x0, "x1", x1)
    if c is not None:
        for leaf in jax.tree.leaves(c):
            _checks.check_batch_size("c", leaf, n)
    path = path or linear_path()
    coupling = coupling or independent()
    time_sampler = time_sampler or uniform()

    k0, kc, kt = jax.random.split(key, 3)
    if x0 is None:
        x0 = jax.random.normal(k0, x1.shape, x1.dtype)
    i0, i1 = coupling(kc, x0, x1, labels=labels_for_coupling(c))
    x0, x1, c = x0[i0], x1[i1], gather_condition(c, i1)

    t = time_sampler(kt, n).astype(x1.dtype)
    x_t, dx_t = path.sample(x0, x1, t)
    target = {"velocity": dx_t, "data": x1, "noise": x0}[prediction]
    pred = call_with_condition(v_fn, x_t, t, c=c)
    per_sample = mean_squared(pred - target)
    weights = jnp.ones_like(per_sample) if weighting is None else weighting(t)
    loss = jnp.mean(weights * per_sample)
    return loss, {"mse": jnp.mean(per_sample)}


__all__ = ["cfm"]
