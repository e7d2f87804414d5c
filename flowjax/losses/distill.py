"""Distillation and rectification losses: reflow, Rectified Diffusion, MDT-dist, BOSS, FlowTurbo.

Every loss is pure, ``loss(fn, key, batch, *, ...) -> (scalar, aux)``, with the model a plain
callable closing over its parameters. Teachers are plain callables too (``teacher(x, t)``), and
everything computed from a teacher is wrapped in ``jax.lax.stop_gradient``.

Papers and what is theirs (all in project time, t = 0 noise, t = 1 data):

- :func:`reflow`: Rectified Flow / reflow (Liu et al. 2209.03003), spec ``rectified-diffusion.md``
  §3.1: ``E || (x1 - x0) - v(x_t, t) ||^2`` on *teacher pairs* ``(x0, x1 = X_{0,1}(x0))``; any
  affine path is accepted (the target is then ``alpha'_t x1 + sigma'_t x0``).
- :func:`k_step_distillation`: the distillation after reflow (2209.03003; spec §3.1): ``t`` on a
  ``k``-point grid, for ``k = 1`` ``|| x1 - (x0 + v(x0, 0)) ||^2``.
- :func:`rectified_diffusion`: Rectified Diffusion (Wang et al. 2410.07303) as in the official
  ``train.py`` (spec §3.2): the teacher's own path and parameterisation on pairs; pseudo-Huber on
  ``x1_hat`` with ``c = 1e-3``.
- :func:`rectify`: the k-rectified loop (generate pairs with the current model, retrain).
- :func:`velocity_matching`, :func:`velocity_distillation`, :func:`mdt_dist`:
  MDT-dist (Zhou et al. 2509.04406), read from the official code (spec ``mdt-dist.md`` §3.1-3.2).
- :func:`consistency_distillation`: the CM baseline branch of the same code (spec §5).
- :func:`boss_straightening`: BOSS "redress" fine-tune (Nguyen et al. 2312.16414; spec §3.3).
- :func:`flowturbo_refiner`: FlowTurbo refiner objective (Zhao et al. 2409.18128; spec §3.4).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array

from flowjax import _checks
from flowjax.data.pairs import generate_pairs
from flowjax.losses.cfm import call_with_condition, mean_squared
from flowjax.paths import AffinePath, broadcast_time, cosine_path, linear_path
from flowjax.samplers.first_order import data_and_noise
from flowjax.timesteps import TimeSampler, logit_normal, uniform

sg = jax.lax.stop_gradient
VelocityFn = Callable[..., Array]


def _check_pairs(x0: Array, x1: Array) -> None:
    _checks.check_float_array("x1", x1, min_ndim=1)
    _checks.check_float_array("x0", x0, min_ndim=1)
    _checks.check_same_shape("x0", x0, "x1", x1)


def pseudo_huber(r: Array, c: float = 1e-3) -> Array:
    """Element-wise pseudo-Huber ``sqrt(r^2 + c^2) - c`` (Rectified Diffusion's loss, c = 1e-3).

    ``~ r^2 / (2c)`` for ``|r| << c`` and ``~ |r|`` for ``|r| >> c``; its gradient is bounded by 1.
    """
    return jnp.sqrt(r**2 + c**2) - c


# ------------------------------------------------------------------------------------------------
# Reflow / Rectified Flow
# ------------------------------------------------------------------------------------------------
def reflow(
    v_fn: VelocityFn,
    key: Array,
    x1: Array,
    *,
    x0: Array,
    path: AffinePath | None = None,
    time_sampler: TimeSampler | None = None,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """Reflow loss on teacher pairs (Liu et al. 2209.03003, eq. of 1-RF with coupled pairs).

    ``L = E_t || (alpha'_t x1 + sigma'_t x0) - v(x_t, t) ||^2``, ``x_t = alpha_t x1 + sigma_t x0``,
    where ``(x0, x1)`` are *matched* pairs (``x1 = X_{0,1}(x0)`` of the previous model; see
    :func:`flowjax.data.pairs.generate_pairs`), never re-drawn noise. With the linear path the
    target is ``x1 - x0``. ``t ~ U[0, 1]`` by default (the RF code uses ``U[1e-3, 1]``; pass
    ``time_sampler=uniform(1e-3, 1.0)`` for that).

    Args:
      v_fn: ``v(x, t)``; x1: paired samples ``(n, ...)``; x0: the paired noises (required).

    Returns:
      ``(loss, {"mse": loss})``.
    """
    _check_pairs(x0, x1)
    path = path or linear_path()
    t = (time_sampler or uniform())(key, x1.shape[0]).astype(x1.dtype)
    x_t, target = path.sample(x0, x1, t)
    loss = jnp.mean(mean_squared(call_with_condition(v_fn, x_t, t, c=c) - target))
    return loss, {"mse": loss}


def k_step_distillation(
    v_fn: VelocityFn,
    key: Array,
    x1: Array,
    *,
    x0: Array,
    k: int = 1,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """k-step distillation of a rectified flow (2209.03003 §2.3; spec ``rectified-diffusion.md`` §3.1).

    ``t`` uniform on the grid ``{0, 1/k, ..., (k-1)/k}``, ``L = || (x1 - x0) - v(x_t, t) ||^2`` on the
    linear path. For ``k = 1`` this is ``|| x1 - (x0 + v(x0, 0)) ||^2``: a one-step generator whose
    minimiser over functions of ``x0`` is the pairs' map, ``x0 + v(x0, 0) = x1(x0)``.
    (The LPIPS variant is for images and not implemented.)
    """
    _check_pairs(x0, x1)
    _checks.check_positive_int("k", k)
    t = jax.random.randint(key, (x1.shape[0],), 0, k).astype(x1.dtype) / k
    x_t, target = linear_path().sample(x0, x1, t)
    loss = jnp.mean(mean_squared(call_with_condition(v_fn, x_t, t, c=c) - target))
    return loss, {"mse": loss}


def rectified_diffusion(
    model_fn: VelocityFn,
    key: Array,
    x1: Array,
    *,
    x0: Array,
    path: AffinePath | None = None,
    prediction: str = "noise",
    huber_c: float | None = 1e-3,
    time_sampler: TimeSampler | None = None,
    alpha_min: float = 1e-3,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """Rectified Diffusion loss (Wang et al. 2410.07303; official ``train.py``, spec §3.2).

    On teacher pairs ``(x0, x1)`` and the teacher's own (possibly curved) path:

        x_t = alpha_t x1 + sigma_t x0                (the *stored* paired noise)
        x1_hat = data prediction converted from the model output (eps / x1 / v)
        L = mean( sqrt((x1_hat - x1)^2 + c^2) - c ),   c = 1e-3   (pseudo-Huber on x1)

    The minimiser makes ``(x1_hat, x0_hat)`` constant along each trajectory, so the first-order
    (DDIM) sampler :func:`flowjax.samplers.first_order` is exact in one step (the paper's
    "first-order ODE" target; a straight line only for the linear path).

    Paper vs ours: the paper uses SD 1.5's discrete DDPM schedule with ``tau ~ U{0..999}`` and
    epsilon prediction; here the path is any :class:`AffinePath` (default the cosine VP path
    ``alpha = sin(pi t/2)``, ours, as in the spec's toy), ``t ~ U[0, 1]``, and ``prediction`` any of
    ``noise | data | velocity``. ``huber_c=None`` gives the plain L2 loss on ``x1_hat``.
    ``alpha_min`` floors ``alpha_t`` in the eps -> x1 conversion (spec pitfall).
    """
    _check_pairs(x0, x1)
    _checks.check_choice("prediction", prediction, ("noise", "data", "velocity"))
    path = path or cosine_path()
    t = (time_sampler or uniform())(key, x1.shape[0]).astype(x1.dtype)
    x_t, _ = path.sample(x0, x1, t)
    x1_hat, _ = data_and_noise(model_fn, x_t, t, path=path, prediction=prediction, alpha_min=alpha_min, c=c)
    r = x1_hat - x1
    per = pseudo_huber(r, huber_c) if huber_c is not None else r**2
    loss = jnp.mean(per)
    return loss, {"x1_mse": jnp.mean(r**2)}


def rectify(
    v_fn: VelocityFn,
    train_fn: Callable[[int, Array, Array], VelocityFn],
    key: Array,
    *,
    rounds: int,
    num_pairs: int,
    sample_source: Callable[[Array, int], Array],
    solver: str = "rk4",
    steps: int = 200,
    batch_size: int = 4096,
    mesh: Any = None,
) -> list[VelocityFn]:
    """The k-rectified loop: ``v^(k+1) = train(pairs of v^(k))`` for ``rounds`` rounds (2209.03003).

    ``train_fn(round, x0, x1) -> new velocity callable`` does the (re)training with, e.g.,
    :func:`reflow`; pairs come from :func:`flowjax.data.pairs.generate_pairs` with the current
    model (round ``r`` uses ``fold_in(key, r)``). Returns the list ``[v^(1), ..., v^(rounds+1)]``.
    """
    _checks.check_positive_int("rounds", rounds)
    models = [v_fn]
    for r in range(rounds):
        x0, x1 = generate_pairs(
            models[-1], jax.random.fold_in(key, r), num_pairs, sample_source=sample_source,
            solver=solver, steps=steps, batch_size=batch_size, mesh=mesh,
        )
        models.append(train_fn(r, x0, x1))
    return models


# ------------------------------------------------------------------------------------------------
# MDT-dist: Velocity Matching and Velocity Distillation
# ------------------------------------------------------------------------------------------------
MDT_MODES = ("discrete", "continuous")


def _per_sample_norm(x: Array) -> Array:
    n = jnp.sqrt(jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=-1))
    return n.reshape((-1,) + (1,) * (x.ndim - 1))


def to_data_target(
    ub_fn: VelocityFn,
    teacher: VelocityFn,
    x_s: Array,
    s: Array,
    *,
    mode: str = "discrete",
    delta: float = 0.01,
    d_norm: bool = True,
    d_norm_c: float = 0.1,
    ub_at_x: Array | None = None,
    c: Any = None,
) -> Array:
    """MDT-dist's to-data target ``sg( v_T + (1 - s) D_s ub )`` (2509.04406; spec §3.1).

    From the Eulerian identity with ``t = 1``: ``ub(x_s, s) = v(x_s, s) + (1 - s) D_s ub(x_s, s)``,
    ``D_s = d/ds + v . grad_x``. ``D_s ub`` is, per the official code, either a finite difference
    along one teacher Euler step of size ``delta`` (``"discrete"``, default)
    ``[ub(x_s + delta v_T, s + delta) - ub(x_s, s)] / delta`` or a JVP with tangent ``(v_T, 1)``
    (``"continuous"``); with ``d_norm`` it is divided by ``(||D|| + 0.1)`` per sample. All of it is
    stop-gradient (the code evaluates these under no-grad). ``ub_at_x`` reuses an already computed
    ``ub(x_s, s)`` (its value; it is detached here).
    """
    _checks.check_choice("mode", mode, MDT_MODES)
    v_t = sg(call_with_condition(teacher, x_s, s, c=c))
    if mode == "continuous":
        f = lambda x, ss: call_with_condition(ub_fn, x, ss, c=c)
        _, du = jax.jvp(f, (x_s, s), (v_t, jnp.ones_like(s)))
    else:
        base = call_with_condition(ub_fn, x_s, s, c=c) if ub_at_x is None else ub_at_x
        ahead = call_with_condition(ub_fn, x_s + delta * v_t, s + delta, c=c)
        du = (ahead - base) / delta
    du = sg(du)
    if d_norm:
        du = du / (_per_sample_norm(du) + d_norm_c)
    return sg(v_t + broadcast_time(1.0 - s, x_s) * du)


def _mdt_times(key: Array, n: int, time_sampler: TimeSampler | None, mode: str, delta: float, dtype) -> Array:
    s = (time_sampler or logit_normal(-1.0, 1.0))(key, n).astype(dtype)
    # Discrete mode: s + delta must stay <= 1 (the code rescales its tau to [sigma_min + delta, 1]).
    return s * (1.0 - delta) if mode == "discrete" else s


def velocity_matching(
    ub_fn: VelocityFn,
    key: Array,
    x1: Array,
    *,
    teacher: VelocityFn,
    mode: str = "discrete",
    delta: float = 0.01,
    d_norm: bool = True,
    d_norm_c: float = 0.1,
    time_sampler: TimeSampler | None = None,
    lambda_vm: float = 1.0,
    x0: Array | None = None,
    s: Array | None = None,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """Velocity Matching (MDT-dist, 2509.04406; official dense trainer, spec §3.1).

        x_s = s x1 + (1 - s) eps,   L_VM = lambda_vm * mean( (ub(x_s, s) - sg(v_T + (1-s) D_s ub))^2 )

    ``ub(x, s) = u(x, s, 1)`` is the student's to-data average velocity (one time input);
    ``teacher(x, s)`` the teacher velocity (CFG, if any, is the caller's closure).
    ``s ~ logit-normal(-1, 1)`` in project time (TRELLIS's ``logitNormal(1, 1)`` in its flipped
    time), rescaled to ``[0, 1 - delta]`` in discrete mode.
    """
    _checks.check_float_array("x1", x1, min_ndim=1)
    _checks.check_choice("mode", mode, MDT_MODES)
    ke, ks = jax.random.split(key)
    eps = jax.random.normal(ke, x1.shape, x1.dtype) if x0 is None else x0
    if s is None:
        s = _mdt_times(ks, x1.shape[0], time_sampler, mode, delta, x1.dtype)
    x_s, _ = linear_path().sample(eps, x1, s)
    pred = call_with_condition(ub_fn, x_s, s, c=c)
    target = to_data_target(
        ub_fn, teacher, x_s, s, mode=mode, delta=delta, d_norm=d_norm, d_norm_c=d_norm_c,
        ub_at_x=sg(pred), c=c,
    )
    loss = lambda_vm * jnp.mean((pred - target) ** 2)
    return loss, {"vm": loss}


def velocity_distillation(
    ub_fn: VelocityFn,
    key: Array,
    x1: Array,
    *,
    teacher: VelocityFn,
    mode: str = "discrete",
    delta: float = 0.01,
    d_norm: bool = True,
    d_norm_c: float = 0.1,
    time_sampler: TimeSampler | None = None,
    lambda_vd: float = 1.0,
    x0: Array | None = None,
    s: Array | None = None,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """Velocity Distillation (MDT-dist, 2509.04406; official code, spec §3.2).

        ub_fake = ub(eps', 0)                       (the only graded path)
        x1_fake = eps' + ub_fake                    (one-step student sample)
        x_s^f = s sg(x1_fake) + (1 - s) eps,   r = sg( ub(x_s^f, s) - target(x_s^f, s) )
        L_VD = lambda_vd * mean( (r + ub_fake - sg(ub_fake))^2 )

    The value is ``lambda_vd mean(r^2)``; the gradient is ``(2 lambda_vd / N) r^T d ub_fake/d theta``
    (``N`` = number of averaged elements): each one-step sample moves along
    ``target - ub`` at its re-noised point (DMD-like; interpretation from the spec, derived).
    ``x1`` only fixes the shape here (VD is data free); ``eps`` (``x0``) is shared with VM in
    :func:`mdt_dist`.
    """
    _checks.check_float_array("x1", x1, min_ndim=1)
    _checks.check_choice("mode", mode, MDT_MODES)
    ke, ks, kf = jax.random.split(key, 3)
    eps = jax.random.normal(ke, x1.shape, x1.dtype) if x0 is None else x0
    if s is None:
        s = _mdt_times(ks, x1.shape[0], time_sampler, mode, delta, x1.dtype)
    eps_fake = jax.random.normal(kf, x1.shape, x1.dtype)
    zero = jnp.zeros((x1.shape[0],), x1.dtype)
    ub_fake = call_with_condition(ub_fn, eps_fake, zero, c=c)
    x1_fake = sg(eps_fake + ub_fake)  # VD re-noises the detached fake sample (spec §7)
    x_sf, _ = linear_path().sample(eps, x1_fake, s)
    ub_sf = call_with_condition(ub_fn, x_sf, s, c=c)
    tgt = to_data_target(ub_fn, teacher, x_sf, s, mode=mode, delta=delta, d_norm=d_norm, d_norm_c=d_norm_c,
                         ub_at_x=sg(ub_sf), c=c)
    r = sg(ub_sf - tgt)
    loss = lambda_vd * jnp.mean((r + ub_fake - sg(ub_fake)) ** 2)
    return loss, {"vd": loss}


def mdt_dist(
    ub_fn: VelocityFn,
    key: Array,
    x1: Array,
    *,
    teacher: VelocityFn,
    mode: str = "discrete",
    delta: float = 0.01,
    d_norm: bool = True,
    d_norm_c: float = 0.1,
    time_sampler: TimeSampler | None = None,
    lambda_vm: float = 1.0,
    lambda_vd: float = 1.0,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """MDT-dist total loss ``L_VM + L_VD`` with one shared ``eps`` and ``s`` (2509.04406, spec §3.4)."""
    _checks.check_float_array("x1", x1, min_ndim=1)
    ke, ks, kv = jax.random.split(key, 3)
    eps = jax.random.normal(ke, x1.shape, x1.dtype)
    s = _mdt_times(ks, x1.shape[0], time_sampler, mode, delta, x1.dtype)
    kw = dict(teacher=teacher, mode=mode, delta=delta, d_norm=d_norm, d_norm_c=d_norm_c, x0=eps, s=s, c=c)
    l_vm, _ = velocity_matching(ub_fn, kv, x1, lambda_vm=lambda_vm, **kw)
    l_vd, _ = velocity_distillation(ub_fn, kv, x1, lambda_vd=lambda_vd, **kw)
    return l_vm + l_vd, {"vm": l_vm, "vd": l_vd}


def consistency_distillation(
    ub_fn: VelocityFn,
    key: Array,
    x1: Array,
    *,
    teacher: VelocityFn,
    delta: float = 0.01,
    time_sampler: TimeSampler | None = None,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """Consistency-distillation baseline of the MDT-dist code (``distill_type='cm'``, spec §5).

    ``f(x, s) = x + (1 - s) ub(x, s)``; ``x' = x_s + delta v_T(x_s, s)``;
    ``L = mean || f(x_s, s) - sg f(x', s + delta) ||^2`` (online student under no-grad, no EMA, as
    in the code with multiphase 1).
    """
    _checks.check_float_array("x1", x1, min_ndim=1)
    ke, ks = jax.random.split(key)
    eps = jax.random.normal(ke, x1.shape, x1.dtype)
    s = _mdt_times(ks, x1.shape[0], time_sampler, "discrete", delta, x1.dtype)
    x_s, _ = linear_path().sample(eps, x1, s)
    v_t = sg(call_with_condition(teacher, x_s, s, c=c))
    f = lambda x, ss: x + broadcast_time(1.0 - ss, x) * call_with_condition(ub_fn, x, ss, c=c)
    x_next = x_s + delta * v_t
    target = sg(f(x_next, s + delta))
    loss = jnp.mean((f(x_s, s) - target) ** 2)
    return loss, {"cm": loss}


# ------------------------------------------------------------------------------------------------
# BOSS straightening ("redress") and FlowTurbo refiner
# ------------------------------------------------------------------------------------------------
def boss_straightening(
    v_fn: VelocityFn,
    key: Array,
    x_b: Array,
    *,
    x_a: Array,
    t_a: Array,
    t_b: Array,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """BOSS straightening loss (Nguyen et al. 2312.16414; official ``losses.py``, L2 option).

    ``L = E || v(x_a, t_a) - (x_b - x_a) / (t_b - t_a) ||^2`` over consecutive states
    ``(x_a, x_b)`` of the teacher's fine Euler trajectory at consecutive Bellman times
    (:func:`flowjax.samplers.boss.straightening_pairs`). ``key`` is unused (the batch is the pairs).
    """
    del key
    _checks.check_float_array("x_b", x_b, min_ndim=1)
    _checks.check_same_shape("x_a", x_a, "x_b", x_b)
    t_a = jnp.asarray(t_a, x_b.dtype)
    t_b = jnp.asarray(t_b, x_b.dtype)
    target = (x_b - x_a) / broadcast_time(t_b - t_a, x_b)
    loss = jnp.mean(mean_squared(call_with_condition(v_fn, x_a, t_a, c=c) - target))
    return loss, {"mse": loss}


def flowturbo_refiner(
    r_fn: Callable[..., Array],
    key: Array,
    x1: Array,
    *,
    teacher: VelocityFn,
    delta_max: float = 0.12,
    time_sampler: TimeSampler | None = None,
    c: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """FlowTurbo velocity-refiner objective (Zhao et al. 2409.18128; code ``training_losses``, spec §3.4).

        x_t = (1 - t) x0 + t x1,  delta ~ U(0, delta_max) (one scalar per batch)
        v0 = sg v_T(x_t, t);  x' = x_t + delta v0;  target = sg v_T(x', t + delta)
        L = mean || v0 + r(x', t + delta, v0) - target ||^2

    ``r_fn(x, t, v_ref)`` predicts a velocity *offset* relative to ``v_ref``. ``t + delta`` may
    exceed 1, as in the code. Label dropout of the code (10%, applied to the refiner and the second
    teacher call) is the caller's: pass already-dropped labels as ``c``.
    """
    _checks.check_float_array("x1", x1, min_ndim=1)
    k0, kt, kd = jax.random.split(key, 3)
    x0 = jax.random.normal(k0, x1.shape, x1.dtype)
    t = (time_sampler or uniform())(kt, x1.shape[0]).astype(x1.dtype)
    delta = jax.random.uniform(kd, (), x1.dtype, 0.0, delta_max)
    x_t, _ = linear_path().sample(x0, x1, t)
    v0 = sg(call_with_condition(teacher, x_t, t, c=c))
    x_next = x_t + delta * v0
    t_next = t + delta
    target = sg(call_with_condition(teacher, x_next, t_next, c=c))
    pred = v0 + call_with_condition(r_fn, x_next, t_next, v0, c=c)
    loss = jnp.mean(mean_squared(pred - target))
    return loss, {"mse": loss, "offset_mse_at_zero": jnp.mean(mean_squared(v0 - target))}


__all__ = [
    "boss_straightening",
    "consistency_distillation",
    "flowturbo_refiner",
    "k_step_distillation",
    "mdt_dist",
    "pseudo_huber",
    "rectified_diffusion",
    "rectify",
    "reflow",
    "to_data_target",
    "velocity_distillation",
    "velocity_matching",
]
