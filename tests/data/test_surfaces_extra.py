"""Superquadric and random-mesh surfaces (flowjax.data.surfaces)."""

import numpy as np
import pytest
import trimesh

from flowjax.data import surfaces


def test_superquadric_points_lie_on_the_surface_inside_unit_ball():
    p = surfaces.sample_surface(np.random.default_rng(0), "superquadric", 3000)
    np.testing.assert_allclose(surfaces.superquadric_residual(p), 0.0, atol=1e-12)
    assert np.linalg.norm(p, axis=1).max() < 1.0


def test_superquadric_sampling_is_uniform_by_area():
    # Independent area estimate: a fine triangulation of the same radial surface.
    sphere = trimesh.creation.icosphere(subdivisions=4)
    u = sphere.vertices / np.linalg.norm(sphere.vertices, axis=1, keepdims=True)
    r = surfaces.superquadric_residual(u) * -1 + 1.0  # r(u) = 1 - (‖u‖ - r(u)) with ‖u‖ = 1
    mesh = trimesh.Trimesh(u * r[:, None], sphere.faces, process=False)
    far = np.linalg.norm(mesh.triangles_center, axis=1) > 0.65  # corners and edges of the rounded box
    area_frac = mesh.area_faces[far].sum() / mesh.area
    p = surfaces.sample_surface(np.random.default_rng(1), "superquadric", 20000)
    frac = np.mean(np.linalg.norm(p, axis=1) > 0.65)
    assert abs(frac - area_frac) < 0.02, (frac, area_frac)
    # sampling uniform in direction (not by area) would under-weight the far region visibly
    dirs = np.random.default_rng(2).normal(size=(20000, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    naive = dirs * (1.0 - surfaces.superquadric_residual(dirs))[:, None]
    assert area_frac - np.mean(np.linalg.norm(naive, axis=1) > 0.65) > 0.05


def test_mesh_distance_exact_on_a_triangle():
    tri = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]], process=False)
    pts = np.array([[0.2, 0.2, 0.5], [2.0, 0.0, 0.0], [-1.0, -1.0, 0.0], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(surfaces.mesh_distance(pts, tri), [0.5, 1.0, np.sqrt(2.0), 0.0], atol=1e-12)


def test_mesh_sampling_by_area_and_on_surface():
    # two triangles with areas 0.5 and 1.5
    mesh = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [3, 0, 1], [0, 1, 1]],
                           [[0, 1, 2], [3, 4, 5]], process=False)
    p = surfaces.sample_mesh(np.random.default_rng(0), mesh, 20000)
    assert abs(np.mean(p[:, 2] < 0.5) - 0.25) < 0.015
    np.testing.assert_allclose(surfaces.mesh_distance(p[:500], mesh), 0.0, atol=1e-12)


def test_random_mesh_is_closed_star_shaped_and_seeded():
    a = surfaces.random_mesh(np.random.default_rng(3))
    b = surfaces.random_mesh(np.random.default_rng(3))
    c = surfaces.random_mesh(np.random.default_rng(4))
    assert a.is_watertight and np.allclose(a.vertices, b.vertices) and not np.allclose(a.vertices, c.vertices)
    assert np.linalg.norm(a.vertices, axis=1).max() == pytest.approx(1.0)
    p = surfaces.sample_surface(np.random.default_rng(5), "mesh", 100)
    assert p.shape == (100, 3)


def test_unknown_shape_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        surfaces.sample_surface(np.random.default_rng(0), "cube", 10)
