"""Point clouds on analytic surfaces (PUFM++ toy, spec pufm.md §5; ours).

Shapes (native coordinates, inside the unit ball): unit ``sphere``; ``torus`` (R = 0.7, r = 0.3,
axis z); ``ellipsoid`` (semi-axes 1, 0.7, 0.5); ``bumpy`` sphere ``r(θ, φ) = (1 + 0.15 sin 3θ cos 2φ)/1.15``.
Samples are uniform by area (rejection on the area element of the parametrisation), then randomly
rotated. Views: :func:`sparse_view` (farthest-point subsample + jitter), :func:`noisy_view`,
:func:`partial_view` (points facing a direction).

Beyond the analytic four (``SHAPES``, the PUFM toy's default), ``sample_surface`` also draws
``superquadric`` (a rounded box, inside-outside function ``F``, see :func:`superquadric_residual`)
and ``mesh`` (a fresh random star-shaped triangle mesh per call, see :func:`random_mesh`; sampling
uniform by area and exact point-to-mesh distance come from ``trimesh``).
"""

from __future__ import annotations

import numpy as np

SHAPES = ("sphere", "torus", "ellipsoid", "bumpy")
ALL_SHAPES = SHAPES + ("superquadric", "mesh")
TORUS_R, TORUS_r = 0.7, 0.3
ELLIPSOID_AXES = (1.0, 0.7, 0.5)
SUPERQUADRIC = {"axes": (0.6, 0.55, 0.5), "e1": 0.4, "e2": 0.4}  # a rounded box inside the unit ball


def _superquadric_F(x: np.ndarray) -> np.ndarray:
    """Inside-outside function ``((|x/a|^{2/e2} + |y/b|^{2/e2})^{e2/e1} + |z/c|^{2/e1})`` (= 1 on the surface)."""
    a, b, c = SUPERQUADRIC["axes"]
    e1, e2 = SUPERQUADRIC["e1"], SUPERQUADRIC["e2"]
    xy = np.abs(x[:, 0] / a) ** (2 / e2) + np.abs(x[:, 1] / b) ** (2 / e2)
    return xy ** (e2 / e1) + np.abs(x[:, 2] / c) ** (2 / e1)


def _superquadric_radius(u: np.ndarray) -> np.ndarray:
    # F is homogeneous of degree 2/e1, so F(r u) = 1 gives r = F(u)^(-e1/2): the surface is star-shaped.
    return _superquadric_F(u) ** (-SUPERQUADRIC["e1"] / 2)


def superquadric_residual(x: np.ndarray) -> np.ndarray:
    """Radial residual ``‖x‖ − r(x/‖x‖)`` to the superquadric (0 on the surface; ≈ signed distance near it)."""
    norm = np.linalg.norm(x, axis=1)
    return norm - _superquadric_radius(x / norm[:, None])


def random_mesh(rng: np.random.Generator, *, subdivisions: int = 2, roughness: float = 0.25):
    """A random star-shaped triangle mesh: an icosphere whose vertex radii follow a smooth random
    field ``1 + roughness · Σ_k a_k cos(⟨w_k, u⟩ + φ_k)`` (6 random low-frequency waves), scaled into
    the unit ball. Returns a ``trimesh.Trimesh``."""
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    u = sphere.vertices / np.linalg.norm(sphere.vertices, axis=1, keepdims=True)
    w = rng.normal(size=(6, 3)) * 1.5
    field = np.cos(u @ w.T + rng.uniform(0, 2 * np.pi, 6)[None]) @ rng.uniform(-1, 1, 6) / 6
    r = 1.0 + roughness * field
    return trimesh.Trimesh(vertices=u * (r / r.max())[:, None], faces=sphere.faces, process=False)


def sample_mesh(rng: np.random.Generator, mesh, n: int) -> np.ndarray:
    """``n`` points uniform by area on a ``trimesh.Trimesh``."""
    import trimesh

    points, _ = trimesh.sample.sample_surface(mesh, n, seed=int(rng.integers(2**31)))
    return np.asarray(points)


def mesh_distance(x: np.ndarray, mesh, *, chunk: int = 256) -> np.ndarray:
    """Exact unsigned distance from each point ``x (n, 3)`` to the mesh (closest point over all faces)."""
    import trimesh

    tri = np.asarray(mesh.triangles)
    out = []
    for i in range(0, len(x), chunk):
        q = x[i : i + chunk]
        p = np.repeat(q, len(tri), 0)
        cp = trimesh.triangles.closest_point(np.tile(tri, (len(q), 1, 1)), p)
        out.append(np.linalg.norm(cp - p, axis=1).reshape(len(q), len(tri)).min(1))
    return np.concatenate(out)


def _unit(rng, n):
    u = rng.normal(size=(n, 3))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def _bumpy_radius(u):
    theta = np.arccos(np.clip(u[:, 2], -1, 1))
    phi = np.arctan2(u[:, 1], u[:, 0])
    return (1 + 0.15 * np.sin(3 * theta) * np.cos(2 * phi)) / 1.15


def _star_area_factor(u, radius_fn, h=1e-5):
    """Area element of ``u ↦ r(u) u`` on the sphere relative to the sphere's, by finite differences."""
    a = np.cross(u, np.array([0.0, 0.0, 1.0])[None])
    bad = np.linalg.norm(a, axis=1) < 1e-3
    a[bad] = np.cross(u[bad], np.array([1.0, 0.0, 0.0])[None])
    t1 = a / np.linalg.norm(a, axis=1, keepdims=True)
    t2 = np.cross(u, t1)
    f = lambda v: radius_fn(v / np.linalg.norm(v, axis=1, keepdims=True))[:, None] * v / np.linalg.norm(v, axis=1, keepdims=True)
    d1 = (f(u + h * t1) - f(u - h * t1)) / (2 * h)
    d2 = (f(u + h * t2) - f(u - h * t2)) / (2 * h)
    return np.linalg.norm(np.cross(d1, d2), axis=1)


def sample_surface(rng: np.random.Generator, shape: str, n: int) -> np.ndarray:
    """``n`` points uniform by area on ``shape`` (native frame, unrotated); ``mesh`` draws a new random mesh."""
    if shape not in ALL_SHAPES:
        raise ValueError(f"`shape` must be one of {ALL_SHAPES}, got {shape!r}.")
    if shape == "mesh":
        return sample_mesh(rng, random_mesh(rng), n)
    out = []
    while sum(len(o) for o in out) < n:
        m = 4 * n
        if shape == "sphere":
            out.append(_unit(rng, n))
            continue
        if shape == "torus":
            uu, vv = rng.uniform(0, 2 * np.pi, (2, m))
            keep = rng.uniform(size=m) < (TORUS_R + TORUS_r * np.cos(vv)) / (TORUS_R + TORUS_r)
            uu, vv = uu[keep], vv[keep]
            rho = TORUS_R + TORUS_r * np.cos(vv)
            out.append(np.stack([rho * np.cos(uu), rho * np.sin(uu), TORUS_r * np.sin(vv)], 1))
            continue
        u = _unit(rng, m)
        if shape == "ellipsoid":
            ax = np.asarray(ELLIPSOID_AXES)
            w = np.linalg.norm(u / ax[None], axis=1) * np.prod(ax)  # area element of u ↦ A u
            pts = u * ax[None]
        elif shape == "superquadric":
            w = _star_area_factor(u, _superquadric_radius)
            pts = _superquadric_radius(u)[:, None] * u
        else:
            w = _star_area_factor(u, _bumpy_radius)
            pts = _bumpy_radius(u)[:, None] * u
        keep = rng.uniform(size=m) < w / (w.max() * 1.05)
        out.append(pts[keep])
    return np.concatenate(out)[:n]


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))[None]
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def farthest_point_sampling_np(x: np.ndarray, k: int, start: int = 0) -> np.ndarray:
    """Indices of ``k`` farthest-point samples of ``x (n, d)`` (numpy)."""
    idx = np.zeros(k, dtype=np.int64)
    idx[0] = start
    d = np.sum((x - x[start]) ** 2, 1)
    for i in range(1, k):
        idx[i] = int(np.argmax(d))
        d = np.minimum(d, np.sum((x - x[idx[i]]) ** 2, 1))
    return idx


def sparse_view(rng: np.random.Generator, points: np.ndarray, m: int, *, jitter: float = 0.005) -> np.ndarray:
    """FPS subsample of ``m`` points plus Gaussian jitter."""
    sel = points[farthest_point_sampling_np(points, m, start=int(rng.integers(len(points))))]
    return sel + jitter * rng.normal(size=sel.shape)


def noisy_view(rng: np.random.Generator, points: np.ndarray, noise: float) -> np.ndarray:
    return points + noise * rng.normal(size=points.shape)


def partial_view(points: np.ndarray, direction: np.ndarray, *, threshold: float = 0.0) -> np.ndarray:
    """Points with ``⟨x, d⟩ > threshold`` (one side visible)."""
    d = np.asarray(direction, float)
    return points[points @ (d / np.linalg.norm(d)) > threshold]


def make_upsampling_dataset(seed: int, count: int, *, dense: int = 512, sparse: int = 128, pool: int = 4096,
                            jitter: float = 0.005, shapes: tuple[str, ...] = SHAPES) -> dict[str, np.ndarray]:
    """``count`` instances: ``dense (count, dense, 3)`` (area-uniform pool → FPS), ``sparse
    (count, sparse, 3)`` (FPS of a different pool + jitter), ``rotation (count, 3, 3)``, ``shape`` ids."""
    rng = np.random.default_rng(seed)
    dense_l, sparse_l, rot_l, ids = [], [], [], []
    for i in range(count):
        sid = i % len(shapes)
        rot = random_rotation(rng)
        pool_a = sample_surface(rng, shapes[sid], pool) @ rot.T
        pool_b = sample_surface(rng, shapes[sid], pool) @ rot.T
        dense_l.append(pool_a[farthest_point_sampling_np(pool_a, dense, start=int(rng.integers(pool)))])
        sparse_l.append(sparse_view(rng, pool_b, sparse, jitter=jitter))
        rot_l.append(rot)
        ids.append(ALL_SHAPES.index(shapes[sid]))
    return {"dense": np.stack(dense_l), "sparse": np.stack(sparse_l), "rotation": np.stack(rot_l), "shape": np.array(ids)}


__all__ = [
    "ALL_SHAPES", "ELLIPSOID_AXES", "SHAPES", "SUPERQUADRIC", "mesh_distance", "random_mesh", "sample_mesh",
    "superquadric_residual", "TORUS_R", "TORUS_r", "farthest_point_sampling_np", "make_upsampling_dataset",
    "noisy_view", "partial_view", "random_rotation", "sample_surface", "sparse_view",
]
