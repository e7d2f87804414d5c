"""ArcFlow: momentum-mixture velocity policies with closed-form integration, and their distillation.

Yang et al., *ArcFlow*, arXiv 2602.09014; read from the official code (``policies/arcflow.py``,
``diffusions/arcflow.py``), spec ``arcflow.md`` §3, converted to project time (t = 1 data; the
code's ``sigma = 1 - t`` and velocity ``u = -v``).

Policy (one network evaluation at the step start ``(x_s, t_s)``): component velocities ``mu_k``,
mixture weights ``w = softmax(l)`` and log-rates ``g_k`` (``g_1 = 0``):

    v_pi(t) = sum_k w_k mu_k exp(g_k (t - t_s))                                (state independent)
    X_pi(t_b) = X_pi(t_a) + sum_k w_k mu_k exp(g_k (t_a - t_s)) Delta phi(g_k Delta),
    phi(z) = expm1(z) / z,  Delta = t_b - t_a.

``phi`` uses an exact series branch ``1 + z/2 + z^2/6`` for ``|z| < 1e-4`` (the spec's review; the
code clamps ``|z| >= 1e-4`` instead, relative error up to 5e-5: ``code_clamp=True`` reproduces it).

Training (:func:`arcflow_distill`): on-policy imitation of the teacher's instantaneous velocity
along the student's own (detached, component-dropped) trajectory, data free, ``NFE`` segments
uniform in *raw* time and warped by ``shift`` (the code's ``sigma = shift r / (1 + (shift-1) r)``).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks

sg = jax.lax.stop_gradient


class ArcPolicy(NamedTuple):
    """A momentum-mixture policy for a batch.

    Attributes:
      means: ``(n, K, *feat)`` component velocities ``mu_k`` (project sign).
      logits: ``(n, K, ...)`` mixture logits, broadcastable against ``means`` (e.g. one per pixel).
      log_rates: ``(n, K, ...)`` rates ``g_k`` (the code's "loggamma", used directly in
        ``exp(g Delta)``), broadcastable against ``means``; ``g_1 = 0`` by construction of the heads.
      t_s: ``(n,)`` the step's start time (the policy's time origin).
    """

    means: Array
    logits: Array
    log_rates: Array
    t_s: Array


def phi(z: Array, *, code_clamp: bool = False) -> Array:
    """``expm1(z) / z`` with ``phi(0) = 1``; exact small-``|z|`` series (``|z| < 1e-4``)."""
    if code_clamp:  # the released code: |z| clamped to >= 1e-4, sign kept (0 counted as positive)
        zc = jnp.where(z >= 0, jnp.maximum(z, 1e-4), jnp.minimum(z, -1e-4))
        return jnp.expm1(zc) / zc
    small = jnp.abs(z) < 1e-4
    safe = jnp.where(small, 1.0, z)
    return jnp.where(small, 1.0 + z / 2 + z**2 / 6, jnp.expm1(safe) / safe)


def _time(t: Any, policy: ArcPolicy) -> Array:
    t = jnp.asarray(t, policy.means.dtype)
    t = jnp.broadcast_to(t, policy.t_s.shape)
    return t.reshape(t.shape + (1,) * (policy.means.ndim - 1))


def _weights(policy: ArcPolicy) -> Array:
    return jax.nn.softmax(policy.logits, axis=1)


def policy_velocity(policy: ArcPolicy, t: Any) -> Array:
    """``v_pi(t) = sum_k w_k mu_k exp(g_k (t - t_s))``, shape ``(n, *feat)``."""
    tb, ts = _time(t, policy), _time(policy.t_s, policy)
    return jnp.sum(_weights(policy) * policy.means * jnp.exp(policy.log_rates * (tb - ts)), axis=1)


def policy_displacement(policy: ArcPolicy, t_a: Any, t_b: Any, *, code_clamp: bool = False) -> Array:
    """``X_pi(t_b) - X_pi(t_a) = int_{t_a}^{t_b} v_pi`` in closed form (either order of times)."""
    ta, tb, ts = _time(t_a, policy), _time(t_b, policy), _time(policy.t_s, policy)
    delta = tb - ta
    g = policy.log_rates
    per = policy.means * jnp.exp(g * (ta - ts)) * delta * phi(g * delta, code_clamp=code_clamp)
    return jnp.sum(_weights(policy) * per, axis=1)


def policy_integrate(policy: ArcPolicy, x_a: Array, t_a: Any, t_b: Any, *, code_clamp: bool = False) -> Array:
    """``X_pi(t_b)`` from ``X_pi(t_a) = x_a``."""
    return x_a + policy_displacement(policy, t_a, t_b, code_clamp=code_clamp)


def warp_time(t_raw: Any, shift: float = 3.2) -> Array:
    """Raw project time -> warped project time: ``t = 1 - sigma``, ``sigma = shift r / (1 + (shift-1) r)``, ``r = 1 - t_raw``."""
    r = 1.0 - jnp.asarray(t_raw)
    return 1.0 - shift * r / (1.0 + (shift - 1.0) * r)


def component_dropout(key: Array, policy: ArcPolicy, p: float = 0.1) -> ArcPolicy:
    """Set each logit to ``-inf`` with probability ``p``, never all components of one location."""
    drop = jax.random.bernoulli(key, p, policy.logits.shape)
    all_dropped = jnp.all(drop, axis=1, keepdims=True)
    drop = jnp.logical_and(drop, jnp.logical_not(all_dropped))
    return policy._replace(logits=jnp.where(drop, -jnp.inf, policy.logits))


def _detach(policy: ArcPolicy) -> ArcPolicy:
    return ArcPolicy(*(sg(a) for a in policy))


def arcflow_sample(
    policy_fn: Callable[..., ArcPolicy],
    x0: Array,
    *,
    nfe: int = 2,
    shift: float = 3.2,
    c: Any = None,
) -> Array:
    """ArcFlow sampling: ``nfe`` segments uniform in raw time; one policy per segment, closed-form steps."""
    _checks.check_float_array("x0", x0, min_ndim=1)
    _checks.check_positive_int("nfe", nfe)
    x = x0
    n = x0.shape[0]
    for j in range(nfe):
        ts = warp_time(j / nfe, shift)
        te = warp_time((j + 1) / nfe, shift)
        tv = jnp.full((n,), ts, x0.dtype)
        pol = policy_fn(x, tv) if c is None else policy_fn(x, tv, c=c)
        x = policy_integrate(pol, x, ts, te)
    return x


def arcflow_distill(
    policy_fn: Callable[..., ArcPolicy],
    key: Array,
    x0: Array,
    *,
    teacher: Callable[..., Array],
    nfe: int = 2,
    num_points: int = 4,
    window: float = 3.0 / 128.0,
    teacher_ratio: Any = 0.0,
    shift: float = 3.2,
    dropout: float = 0.1,
    loss_scale: float = 30.0,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """ArcFlow on-policy trajectory distillation (data free; official trainer, spec §3.2).

    For each segment ``j`` (raw ``[j/NFE, (j+1)/NFE]``, warped): the student's graded policy ``pi``
    at the detached segment start; ``pi_det`` = detached copy with component dropout; ``num_points``
    sorted uniform raw times ``t_a`` in the segment minus the window. For each ``t_a``:
    ``x_a = X_{pi_det}(t_a)`` from the current state (no grad), ``target = v_T(x_a, t_a)`` (no grad),
    ``pred = [X_pi(t_b + w) - x_a] / (t_b + w - t_a)`` with the graded policy (a short-window average
    velocity), then the state takes a teacher Euler step to ``t_b``. ``t_b = t_a + rho (t_next - t_a)``
    where ``rho = teacher_ratio`` (trajectory mixing; ours: the code allocates that fraction of each
    gap between intermediate points to teacher Euler steps; ``rho = 0`` is fully on-policy).
    ``L_j = loss_scale * mean_i mean((pred - target)^2) * (1 / NFE)`` (raw segment size); the next
    segment starts at ``X_{pi_det}(t_e)`` integrated from the last state.

    ``x0``: a batch of noises (the loss is data free; the positional batch is the *source*).
    ``policy_fn(x, t) -> ArcPolicy``; ``teacher(x, t) -> v`` (CFG is the caller's closure).
    """
    _checks.check_float_array("x0", x0, min_ndim=1)
    _checks.check_positive_int("nfe", nfe)
    _checks.check_positive_int("num_points", num_points)
    n = x0.shape[0]
    rho = jnp.asarray(teacher_ratio, x0.dtype)
    x = x0
    total = jnp.zeros((), x0.dtype)
    aux = {}
    for j in range(nfe):
        kj = jax.random.fold_in(key, j)
        kd, kt = jax.random.split(kj)
        r0, r1 = j / nfe, (j + 1) / nfe
        ts, te = warp_time(r0, shift), warp_time(r1, shift)
        tv = jnp.full((n,), ts, x0.dtype)
        pol = policy_fn(x, tv) if c is None else policy_fn(x, tv, c=c)
        pol_det = component_dropout(kd, _detach(pol), dropout) if dropout > 0 else _detach(pol)
        raw = r0 + jnp.sort(jax.random.uniform(kt, (num_points, n), x0.dtype), axis=0) * max(r1 - r0 - window, 0.0)
        t_pts = warp_time(raw, shift)  # (num_points, n)
        t_next = jnp.concatenate([t_pts[1:], jnp.full((1, n), te, x0.dtype)], axis=0)
        cur_x, cur_t = x, jnp.full((n,), ts, x0.dtype)
        errs = []
        for i in range(num_points):
            t_a = t_pts[i]
            x_a = sg(policy_integrate(pol_det, cur_x, cur_t, t_a))
            target = sg(teacher(x_a, t_a) if c is None else teacher(x_a, t_a, c=c))
            t_b = t_a + rho * (t_next[i] - t_a)
            # The prediction window ends ``window`` raw time after t_b (in warped time).
            r_b = 1.0 - (1.0 - t_b) / (shift - (shift - 1.0) * (1.0 - t_b))  # raw time of t_b (inverse warp)
            t_w = warp_time(r_b + window, shift)
            span = t_w - t_a
            if window > 0:
                pred = policy_displacement(pol, t_a, t_w) / span.reshape((-1,) + (1,) * (x0.ndim - 1))
            else:
                pred = policy_velocity(pol, t_a)
            errs.append(jnp.mean((pred - target) ** 2))
            cur_x = sg(x_a + (t_b - t_a).reshape((-1,) + (1,) * (x0.ndim - 1)) * target)
            cur_t = t_b
        seg = loss_scale * jnp.mean(jnp.stack(errs)) * (r1 - r0)
        aux[f"segment{j}"] = seg
        total = total + seg
        x = sg(policy_integrate(pol_det, cur_x, cur_t, te))
    return total, aux


__all__ = [
    "ArcPolicy",
    "arcflow_distill",
    "arcflow_sample",
    "component_dropout",
    "phi",
    "policy_displacement",
    "policy_integrate",
    "policy_velocity",
    "warp_time",
]
