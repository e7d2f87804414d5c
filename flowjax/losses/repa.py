"""Representation alignment losses: REPA's token-wise cosine and TORA's linear CKA.

* REPA (Yu et al., "Representation Alignment for Generation", arXiv 2410.06940), eq. (4) in project
  notation: ``L_REPA = -E[(1/N) sum_n cos(y*_n, phi(h_t)_n)]`` with ``y* = T(x1)`` the frozen
  teacher's features of the *clean* sample and ``h_t`` an intermediate student layer at ``x_t``.
  We return ``mean_n (1 - cos)`` (the same gradient, shifted so the optimum is 0; this is TORA's
  ``L_cos``, spec tora.md section 3.3).
* TORA (Lee et al., topological representation alignment; spec tora.md section 3.3): linear CKA
  between centred Gram matrices, ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with
  ``K = H H^T``, ``L = Y Y^T``, ``HSIC(K, L) = <C K C, C L C>_F`` (``C = I - 11^T/n``), 1e-8 added
  to the denominator (the paper's); ``L_CKA = mean_batch (1 - CKA)``. We use the exactly equal
  feature form ``HSIC = ||H_c^T Y_c||_F^2`` when it is cheaper (ours; spec section 3.5).
* ``repa_cfm``: the total loss ``L = L_FM + lambda * L_align`` (TORA eq. in section 3.4,
  lambda = 0.5 default, the paper's); the FM part is :func:`flowjax.losses.cfm`'s linear path.

Stop-gradient: the teacher features are wrapped in ``jax.lax.stop_gradient`` (frozen teacher,
REPA eq. (4) / TORA section 3.2), so the alignment gradient reaches only the student (and projector).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from flowjax._checks import check_choice, check_float_array
from flowjax.paths import linear_path


def _check_feats(student: Array, teacher: Array) -> None:
    check_float_array("student", student, ndim=3)
    check_float_array("teacher", teacher, ndim=3)
    if student.shape[:2] != teacher.shape[:2]:
        raise ValueError(
            f"`student` and `teacher` must share (batch, tokens): got student {student.shape} and teacher {teacher.shape}."
        )


def cosine_alignment(student: Float[Array, "b n ds"], teacher: Float[Array, "b n ds"], *, eps: float = 1e-8) -> Array:
    """REPA token-wise loss ``mean_{b,n} (1 - cos(student_bn, teacher_bn))`` (projected student, same width).

    The teacher is stop-gradient (frozen teacher, REPA eq. 4).
    """
    _check_feats(student, teacher)
    if student.shape[-1] != teacher.shape[-1]:
        raise ValueError(f"cosine alignment needs equal widths (use a projector): student {student.shape[-1]}, teacher {teacher.shape[-1]}.")
    teacher = jax.lax.stop_gradient(teacher)  # REPA eq. (4): y* is a frozen target
    sn = student / jnp.maximum(jnp.linalg.norm(student, axis=-1, keepdims=True), eps)
    tn = teacher / jnp.maximum(jnp.linalg.norm(teacher, axis=-1, keepdims=True), eps)
    return jnp.mean(1.0 - jnp.sum(sn * tn, axis=-1))


def _hsic(a: Array, b: Array, form: str) -> Array:
    """Unnormalised linear HSIC of centred features a (n, da), b (n, db): <C A A^T C, C B B^T C>_F."""
    if form == "feature":
        return jnp.sum((a.T @ b) ** 2)
    ka, kb = a @ a.T, b @ b.T
    return jnp.sum(ka * kb)


def linear_cka(x: Float[Array, "n dx"], y: Float[Array, "n dy"], *, form: str = "auto", eps: float = 1e-8) -> Array:
    """Linear CKA of two feature sets over the same n items (TORA section 3.3); 1 for identical features.

    Invariant to orthogonal transforms and isotropic scaling of either argument, and to translations
    (features are centred). ``form``: ``"gram"`` (paper's), ``"feature"`` (equal; cheaper when the
    widths are below ~2n/3), or ``"auto"``.
    """
    check_choice("form", form, ("auto", "gram", "feature"))
    check_float_array("x", x, ndim=2)
    check_float_array("y", y, ndim=2)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"`x` and `y` must have the same number of items: got {x.shape[0]} and {y.shape[0]}.")
    n = x.shape[0]
    if form == "auto":
        form = "feature" if (x.shape[1] * y.shape[1] + x.shape[1] ** 2 + y.shape[1] ** 2) < n * (x.shape[1] + y.shape[1]) else "gram"
    xc = x - jnp.mean(x, axis=0, keepdims=True)  # C H: centring the Gram matrix is centring the features
    yc = y - jnp.mean(y, axis=0, keepdims=True)
    hxy = _hsic(xc, yc, form)
    hxx = _hsic(xc, xc, form)
    hyy = _hsic(yc, yc, form)
    return hxy / (jnp.sqrt(hxx * hyy) + eps)


def cka_alignment(student: Float[Array, "b n ds"], teacher: Float[Array, "b n dt"], *, form: str = "auto", eps: float = 1e-8) -> Array:
    """TORA loss ``mean_batch (1 - CKA(student_b, teacher_b))`` over each sample's tokens (teacher stop-gradient).

    With one token per sample (e.g. an MLP feature), pass ``(1, batch, d)`` to take CKA across the batch.
    """
    _check_feats(student, teacher)
    teacher = jax.lax.stop_gradient(teacher)  # TORA section 3.2: frozen teacher, no gradient
    ckas = jax.vmap(lambda s, t: linear_cka(s, t, form=form, eps=eps))(student, teacher)
    return jnp.mean(1.0 - ckas)


def repa_cfm(
    feature_fn: Callable[..., tuple[Array, Array]],
    key: Array,
    x1: Array,
    *,
    teacher_features: Array,
    project: Callable[[Array], Array] | None = None,
    alignment: str = "cka",
    weight: float = 0.5,
    c: Any = None,
) -> tuple[Array, dict]:
    """FM loss on the linear path plus representation alignment (REPA eq. 5 / TORA section 3.4).

    ``L = mean ||v_theta(x_t, t) - (x1 - x0)||^2 + weight * L_align(project(h_t), T(x1))``.

    Args:
      feature_fn: ``feature_fn(x_t, t[, c=c]) -> (v, h)`` returning the velocity and the student's
        intermediate features ``h`` of shape ``(batch, tokens, d)`` or ``(batch, d)``.
      key: PRNG key (x0 and t).
      x1: clean data batch.
      teacher_features: frozen ``T(x1)`` features, same leading shape as ``h`` (stop-gradient).
      project: the projector ``phi`` (closing over its params); identity if None.
      alignment: ``"cka"`` (TORA, default) or ``"cosine"`` (REPA).
      weight: lambda (0.5, the papers' default).
      c: optional condition passed to ``feature_fn``.
    """
    check_choice("alignment", alignment, ("cka", "cosine"))
    check_float_array("x1", x1, min_ndim=2)
    kx, kt = jax.random.split(key)
    n = x1.shape[0]
    x0 = jax.random.normal(kx, x1.shape, x1.dtype)
    t = jax.random.uniform(kt, (n,), x1.dtype)
    x_t, target = linear_path().sample(x0, x1, t)
    v, h = feature_fn(x_t, t) if c is None else feature_fn(x_t, t, c=c)
    fm = jnp.mean(jnp.sum(((v - target) ** 2).reshape(n, -1), axis=-1))
    h = project(h) if project is not None else h
    y = teacher_features
    if h.ndim == 2:  # one token per sample: align across the batch (CKA) / per sample (cosine)
        h, y = h[None], y[None]
    align = cka_alignment(h, y) if alignment == "cka" else cosine_alignment(h, y)
    return fm + weight * align, {"fm": fm, "align": align}
