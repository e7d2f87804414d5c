"""Synthetic LiDAR-like scene-flow pairs (SCOOP toy, spec scoop.md §5; ours).

A scene is a static ground plane ``z = 0`` over ``extent × extent`` metres plus 2–3 objects (boxes
of side 0.3–1.0 m, spheres of radius 0.3–0.6 m) standing on it. Each object moves rigidly (yaw up
to ±``max_yaw_deg`` about its centre, horizontal translation of 0.1–0.5 m); an optional ego motion
translates everything by up to ``ego`` m. With ``nonrigid > 0`` each object is also deformed by a
smooth sinusoidal warp of that amplitude (non-rigid pairs). Source and target points are sampled
**independently** (area-uniform) on the surfaces before and after the motion, so no index
correspondence exists; the ground-truth flow is the motion of each source point. Gaussian jitter
``noise`` is added to both clouds. Pure numpy with an explicit seed (deterministic).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class SceneFlowPair(NamedTuple):
    """``source (n, 3)``, ``target (m, 3)``, ground-truth ``flow (n, 3)`` of each source point,
    ``labels (n,)`` object index of each source point (0 = ground)."""

    source: np.ndarray
    target: np.ndarray
    flow: np.ndarray
    labels: np.ndarray


def _sample_box(rng, n, side):
    # faces: 6 squares of area side^2, uniform choice; centred at 0
    face = rng.integers(0, 6, n)
    uv = rng.uniform(-0.5, 0.5, (n, 2)) * side
    axis, sign = face // 2, np.where(face % 2 == 0, 1.0, -1.0)
    pts = np.zeros((n, 3))
    for a in range(3):
        sel = axis == a
        others = [b for b in range(3) if b != a]
        pts[sel, a] = sign[sel] * side / 2
        pts[np.ix_(sel, others)] = uv[sel]
    return pts


def _sample_sphere(rng, n, r):
    u = rng.normal(size=(n, 3))
    return r * u / np.linalg.norm(u, axis=1, keepdims=True)


def _yaw(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def make_scene_flow_pair(
    rng: np.random.Generator,
    *,
    n: int = 1024,
    m: int | None = None,
    extent: float = 4.0,
    num_objects: tuple[int, int] = (2, 3),
    max_yaw_deg: float = 10.0,
    translation: tuple[float, float] = (0.1, 0.5),
    ego: float = 0.2,
    nonrigid: float = 0.0,
    noise: float = 0.005,
) -> SceneFlowPair:
    """One piecewise-rigid (or, with ``nonrigid > 0``, deformed) scene-flow pair; see module doc."""
    m = n if m is None else m
    k = int(rng.integers(num_objects[0], num_objects[1] + 1))
    objs = []
    for i in range(k):
        if rng.uniform() < 0.5:
            side = rng.uniform(0.3, 1.0)
            kind, size, area, height = "box", side, 6 * side**2, side / 2
        else:
            r = rng.uniform(0.3, 0.6)
            kind, size, area, height = "sphere", r, 4 * np.pi * r**2, r
        centre = np.array([*rng.uniform(-extent / 2 + 0.6, extent / 2 - 0.6, 2), height])
        yaw = np.deg2rad(rng.uniform(-max_yaw_deg, max_yaw_deg))
        direction = rng.uniform(0, 2 * np.pi)
        shift = rng.uniform(*translation) * np.array([np.cos(direction), np.sin(direction), 0.0])
        freq = rng.normal(size=(3, 3)) * 3.0
        phase = rng.uniform(0, 2 * np.pi, 3)
        objs.append(dict(kind=kind, size=size, area=area, centre=centre, rot=_yaw(yaw), shift=shift, freq=freq, phase=phase))
    ego_t = rng.uniform(-1, 1, 3) * np.array([ego, ego, 0.0]) / np.sqrt(2)
    areas = np.array([extent**2] + [o["area"] for o in objs])
    probs = areas / areas.sum()

    def sample(count):
        lab = rng.choice(len(areas), size=count, p=probs)
        local = np.zeros((count, 3))
        g = lab == 0
        local[g, :2] = rng.uniform(-extent / 2, extent / 2, (g.sum(), 2))
        for i, o in enumerate(objs, start=1):
            sel = lab == i
            fn = _sample_box if o["kind"] == "box" else _sample_sphere
            local[sel] = fn(rng, int(sel.sum()), o["size"])
        return local, lab

    def place(local, lab, moved):
        out = local.copy()
        for i, o in enumerate(objs, start=1):
            sel = lab == i
            p = local[sel]
            if moved:
                if nonrigid > 0:
                    p = p + nonrigid * np.sin(p @ o["freq"].T + o["phase"][None])
                p = p @ o["rot"].T + o["shift"][None]
            out[sel] = p + o["centre"][None]
        if moved:
            out = out + ego_t[None]
        return out

    src_local, src_lab = sample(n)
    source = place(src_local, src_lab, False)
    flow = place(src_local, src_lab, True) - source
    tgt_local, tgt_lab = sample(m)
    target = place(tgt_local, tgt_lab, True)
    source = source + noise * rng.normal(size=source.shape)
    target = target + noise * rng.normal(size=target.shape)
    return SceneFlowPair(source, target, flow, src_lab)


def make_scene_flow_dataset(seed: int, count: int, **kwargs) -> SceneFlowPair:
    """``count`` pairs stacked on a leading axis (``source (count, n, 3)``, ...)."""
    rng = np.random.default_rng(seed)
    pairs = [make_scene_flow_pair(rng, **kwargs) for _ in range(count)]
    return SceneFlowPair(*(np.stack([getattr(p, f) for p in pairs]) for f in SceneFlowPair._fields))


__all__ = ["SceneFlowPair", "make_scene_flow_dataset", "make_scene_flow_pair"]
