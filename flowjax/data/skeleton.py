"""Synthetic articulated skeletons seen by a pinhole camera (FMPose3D toy, spec fmpose3d.md §5).

A 9-joint tree (8 bones): root (pelvis) → spine top → head; two arms of two bones each hanging from
the spine top; one leg pair (one bone each) from the root. Bone lengths are fixed. A pose draws an
independent direction for every bone (its rest direction turned by random angles within per-bone
limits), then a random yaw of the whole body about the vertical axis. The root is placed at depth
``depth`` in front of a pinhole camera (focal ``f``, principal point 0, no distortion), with a small
random lateral offset; the 2D keypoints are the projection plus ``N(0, noise²)``. Depth is
ambiguous from 2D (every bone can tilt toward or away from the camera), so ``p(X_3D | x_2D)`` is
multimodal: the setting FMPose3D's multi-hypothesis lifting addresses.

Ours, not the paper's (the paper uses Human3.6M). The spec says "8 joints"; its list (root, spine,
head, 2 arms of 2 bones, a leg pair) has 9 joints and 8 bones, which is what this generator builds.
Camera coordinates: x right, y up, z forward (depth); ``Π(X) = f (x/z, y/z) + c``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

JOINT_NAMES = ("root", "spine", "head", "l_elbow", "l_hand", "r_elbow", "r_hand", "l_foot", "r_foot")
PARENTS = (-1, 0, 1, 1, 3, 1, 5, 0, 0)
BONE_LENGTHS = (0.0, 0.5, 0.2, 0.3, 0.25, 0.3, 0.25, 0.8, 0.8)
# Rest directions in the body frame (y up); l = +x.
REST_DIRS = (
    (0, 0, 0), (0, 1, 0), (0, 1, 0), (1, -0.3, 0), (1, -0.5, 0), (-1, -0.3, 0), (-1, -0.5, 0),
    (0.25, -1, 0), (-0.25, -1, 0),
)
ANGLE_LIMITS = (0.0, 0.3, 0.4, 1.2, 1.5, 1.2, 1.5, 0.6, 0.6)  # radians, per bone
LEFT_JOINTS = (3, 4, 7)
RIGHT_JOINTS = (5, 6, 8)
NUM_JOINTS = len(JOINT_NAMES)


class PoseBatch(NamedTuple):
    """``x3d`` root-relative poses ``(n, J, 3)``; ``x2d`` noisy projections ``(n, J, 2)``;
    ``root`` absolute root positions ``(n, 3)`` (camera frame)."""

    x3d: Array
    x2d: Array
    root: Array


def _rot_x(a):
    c, s = jnp.cos(a), jnp.sin(a)
    o, z = jnp.ones_like(a), jnp.zeros_like(a)
    return jnp.stack([jnp.stack([o, z, z], -1), jnp.stack([z, c, -s], -1), jnp.stack([z, s, c], -1)], -2)


def _rot_y(a):
    c, s = jnp.cos(a), jnp.sin(a)
    o, z = jnp.ones_like(a), jnp.zeros_like(a)
    return jnp.stack([jnp.stack([c, z, s], -1), jnp.stack([z, o, z], -1), jnp.stack([-s, z, c], -1)], -2)


def _rot_z(a):
    c, s = jnp.cos(a), jnp.sin(a)
    o, z = jnp.ones_like(a), jnp.zeros_like(a)
    return jnp.stack([jnp.stack([c, -s, z], -1), jnp.stack([s, c, z], -1), jnp.stack([z, z, o], -1)], -2)


def project(points: Array, *, focal: float = 1.0, center: tuple[float, float] = (0.0, 0.0)) -> Array:
    """Pinhole projection ``Π(X) = f (x/z, y/z) + c`` of camera-frame points ``(..., 3)`` → ``(..., 2)``."""
    pts = jnp.asarray(points)
    uv = focal * pts[..., :2] / pts[..., 2:3]
    return uv + jnp.broadcast_to(jnp.asarray(center, pts.dtype), uv.shape)


def unproject(uv: Array, depth: Array, *, focal: float = 1.0, center: tuple[float, float] = (0.0, 0.0)) -> Array:
    """Inverse of :func:`project` given the depth ``z``: ``X = ((uv − c) z / f, z)``."""
    uv, depth = jnp.asarray(uv), jnp.asarray(depth)
    c = jnp.broadcast_to(jnp.asarray(center, uv.dtype), uv.shape)
    xy = (uv - c) * depth[..., None] / focal
    return jnp.concatenate([xy, depth[..., None]], axis=-1)


def flip_pose(pose: Array, *, left: tuple[int, ...] = LEFT_JOINTS, right: tuple[int, ...] = RIGHT_JOINTS) -> Array:
    """Horizontal flip of poses ``(..., J, d)``: negate the first coordinate and swap left/right joints."""
    pose = jnp.asarray(pose)
    perm = np.arange(pose.shape[-2])
    perm[list(left)], perm[list(right)] = list(right), list(left)
    return pose[..., perm, :].at[..., 0].multiply(-1.0)


def sample_skeleton_poses(
    key: Array,
    n: int,
    *,
    depth: float = 5.0,
    lateral: float = 0.5,
    noise: float = 0.005,
    focal: float = 1.0,
    dtype=jnp.float32,
) -> PoseBatch:
    """Draw ``n`` random poses, their absolute roots and noisy 2D projections (see module doc)."""
    ka, kb, ky, kr, kn = jax.random.split(key, 5)
    lim = jnp.asarray(ANGLE_LIMITS, dtype)
    a = jax.random.uniform(ka, (n, NUM_JOINTS), dtype, -1.0, 1.0) * lim[None]
    b = jax.random.uniform(kb, (n, NUM_JOINTS), dtype, -1.0, 1.0) * lim[None]
    rest = jnp.asarray(REST_DIRS, dtype)
    rest = rest / jnp.maximum(jnp.linalg.norm(rest, axis=-1, keepdims=True), 1e-12)
    # Bone direction: rest turned about z (in-plane swing) and x (toward/away from the camera).
    dirs = jnp.einsum("njab,njbc,jc->nja", _rot_x(b), _rot_z(a), rest)
    bones = dirs * jnp.asarray(BONE_LENGTHS, dtype)[None, :, None]
    joints = [jnp.zeros((n, 3), dtype)]
    for j in range(1, NUM_JOINTS):
        joints.append(joints[PARENTS[j]] + bones[:, j])
    pose = jnp.stack(joints, axis=1)
    yaw = jax.random.uniform(ky, (n,), dtype, -jnp.pi, jnp.pi)
    pose = jnp.einsum("nab,njb->nja", _rot_y(yaw), pose)
    root = jnp.concatenate(
        [jax.random.uniform(kr, (n, 2), dtype, -lateral, lateral), jnp.full((n, 1), depth, dtype)], axis=-1
    )
    x2d = project(pose + root[:, None, :], focal=focal)
    x2d = x2d + noise * jax.random.normal(kn, x2d.shape, dtype)
    return PoseBatch(pose, x2d, root)


__all__ = [
    "ANGLE_LIMITS",
    "BONE_LENGTHS",
    "JOINT_NAMES",
    "LEFT_JOINTS",
    "NUM_JOINTS",
    "PARENTS",
    "PoseBatch",
    "RIGHT_JOINTS",
    "flip_pose",
    "project",
    "sample_skeleton_poses",
    "unproject",
]
