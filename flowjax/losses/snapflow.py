"""SnapFlow (Luan et al., arXiv 2604.05656): one-step generation by progressive self-distillation.

Project notation (the VLA papers' time is reversed: ``F(x, s_tgt, tau) = -u(x, 1 - tau, 1 - s_tgt)``,
:func:`from_vla_time`). Every row carries both terms:

    L_FM = || u(x_t, t, t) - (x1 - x0) ||^2,                 x_t = (1 - t) x0 + t x1, t ~ p_FM
    w0 = sg[u(x0, 0, 0)],  x_mid = x0 + w0 / 2,  w_mid = sg[u(x_mid, 1/2, 1/2)]
    L_SC = || u(x0, 0, 1) - (w0 + w_mid) / 2 ||^2             (two-step Euler average velocity)
    L = alpha mean(L_FM) + (1 - alpha) lambda mean(L_SC),     alpha = 0.5, lambda = 0.1

The consistency target is built from the model's own *marginal* velocities from pure noise; the
fixed point of ``L_SC`` is the 2-step Euler map of the model's field (derived, snapflow.md 3.1).
A zero-initialised target-time embedding (``flowjax.nets.MLP(zero_init_second_time=True)`` called as
``net.apply(p, x, t_end, s)``, see :func:`snapflow_model`) makes ``u(x, s, t) = v(x, s)`` at
initialisation, so fine-tuning starts from the pretrained FM model.

Sources: the paper's text was unavailable; the equations come from two third-party
re-implementations that agree (snapflow.md): the two terms, alpha, lambda, online parameters for the
no-grad calls, the zero-init target-time MLP. Ours: ``conditional_target=True`` (regress
``u(x0, 0, 1)`` onto ``x1 - x0``, the spec's collapse control), per-element mean squared errors, the
general path for ``L_FM`` (the paper: linear).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax.losses import _fewstep as fs
from flowjax.paths import AffinePath, linear_path
from flowjax.timesteps import TimeSampler, uniform


def from_vla_time(F: Callable[..., Array]) -> Callable[..., Array]:
    """Wrap a VLA-time network ``F(x, s_tgt, tau)`` (tau = 1 noise) as ``u(x, s, t) = -F(x, 1 - t, 1 - s)``."""
    return lambda x, s, t, **kw: -F(x, 1.0 - t, 1.0 - s, **kw)


def snapflow_model(net: Any, params: Any) -> Callable[..., Array]:
    """``u(x, s, t)`` from a two-time MLP whose *second* time input is the zero-initialised target time:
    ``net.apply(params, x, s, t)`` embeds its last argument first, so the call swaps them."""
    return lambda x, s, t, **kw: net.apply(params, x, t, s, **kw)


def snapflow(
    u_fn: Callable[..., Array],
    key: Array,
    x1: Array,
    *,
    x0: Array | None = None,
    path: AffinePath | None = None,
    time_sampler: TimeSampler | None = None,
    alpha: float = 0.5,
    lam: float = 0.1,
    conditional_target: bool = False,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """SnapFlow loss (2604.05656, re-implementation eqs. 9-12), project time.

    Args:
      u_fn: average velocity ``u_fn(x, s, t)`` (``c=`` when given).
      key: PRNG key.
      x1: data (action chunks) ``(n, ...)``.
      x0: noise (default standard normal); the consistency rows start at the same ``x0``.
      path: affine path of the FM term (default linear).
      time_sampler: ``p_FM`` (default ``U[0, 1]``; the pi0 family uses a Beta emphasising noise).
      alpha, lam: ``L = alpha L_FM + (1 - alpha) lam L_SC`` (0.5, 0.1).
      conditional_target: ablation: the consistency target is ``x1 - x0`` instead of the model's
        two-step Euler average velocity.
      c: condition passed as ``c=``.

    Returns:
      ``(loss, {"mse_fm", "mse_sc"})``.
    """
    fs.check_inputs(x1, x0, c)
    fs.check_fraction("alpha", alpha)
    if lam < 0:
        raise ValueError(f"`lam` must be >= 0, got {lam}.")
    path = path or linear_path()
    time_sampler = time_sampler or uniform()
    n = x1.shape[0]
    k0, kt = jax.random.split(key)
    if x0 is None:
        x0 = jax.random.normal(k0, x1.shape, x1.dtype)
    t = time_sampler(kt, n).astype(x1.dtype)
    x_t, v_c = path.sample(x0, x1, t)
    l_fm = fs.mean_squares(fs.call_u(u_fn, x_t, t, t, c) - v_c)

    zeros, halves, ones = jnp.zeros((n,), x1.dtype), jnp.full((n,), 0.5, x1.dtype), jnp.ones((n,), x1.dtype)
    if conditional_target:
        target = x1 - x0
    else:
        # SnapFlow: both teacher-style calls are no-grad with the online parameters.
        w0 = jax.lax.stop_gradient(fs.call_u(u_fn, x0, zeros, zeros, c))
        x_mid = x0 + 0.5 * w0
        w_mid = jax.lax.stop_gradient(fs.call_u(u_fn, x_mid, halves, halves, c))
        target = 0.5 * (w0 + w_mid)
    l_sc = fs.mean_squares(fs.call_u(u_fn, x0, zeros, ones, c) - target)
    loss = alpha * jnp.mean(l_fm) + (1.0 - alpha) * lam * jnp.mean(l_sc)
    return loss, {"mse_fm": jnp.mean(l_fm), "mse_sc": jnp.mean(l_sc)}


__all__ = ["from_vla_time", "snapflow", "snapflow_model"]
