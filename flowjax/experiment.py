"""Shared pieces of every experiment: training a velocity net, sampling, plots and versions.

Experiments live in ``experiments/<slug>/`` (a config with presets and a ``run(config, out_dir)``);
this module holds what they have in common so that no experiment re-implements a training loop,
a sampler call or a plot. Library logic (losses, samplers) stays in the library.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flowjax.train import fit, make_optimizer


# --------------------------------------------------------------------------------------------
# Models as plain callables
# --------------------------------------------------------------------------------------------
def bind(net: Any, params: Any) -> Callable[..., jax.Array]:
    """Close a Flax module over its parameters: ``bind(net, params)(x, *times, c=...)``."""
    return lambda *args, **kwargs: net.apply(params, *args, **kwargs)


def train_net(
    net: Any,
    loss: Callable[..., tuple[jax.Array, dict]],
    params: Any,
    *,
    batch_fn: Callable[[Any], Any],
    steps: int,
    seed: int,
    learning_rate: float = 1e-3,
    ema_decay: float | None = 0.999,
    clip_norm: float | None = 1.0,
    warmup_steps: int = 0,
    log_every: int = 100,
    progress: bool = False,
    use_ema: bool = True,
    **loss_kwargs: Any,
) -> tuple[Any, list[dict]]:
    """Train ``net`` with ``loss(model_fn, key, batch, **loss_kwargs)``; return (params, history).

    ``batch`` is whatever ``batch_fn(step)`` returns; if it is a dict with keys ``x`` (and ``c``),
    the loss receives ``x1=batch["x"], c=batch["c"]``; a dict of pairs ``x0, x1`` (and ``c``), as
    made by :func:`flowjax.couplings.ot_paired_batch_fn` or read from a
    :class:`flowjax.data.pairs.PairDataset`, gives ``x1=batch["x1"], x0=batch["x0"]``. Returns the
    EMA parameters when ``use_ema`` (and an EMA is kept), else the raw parameters.
    """

    def loss_fn(p, key, batch):
        model = bind(net, p)
        if isinstance(batch, Mapping):
            extra = {"c": batch["c"]} if "c" in batch else {}
            if "x0" in batch and "x1" in batch:
                return loss(model, key, batch["x1"], x0=batch["x0"], **extra, **loss_kwargs)
            return loss(model, key, batch["x"], **extra, **loss_kwargs)
        return loss(model, key, batch, **loss_kwargs)

    optimizer = make_optimizer(learning_rate, clip_norm=clip_norm, warmup_steps=warmup_steps)
    state, history = fit(
        loss_fn, params, batch_fn=batch_fn, steps=steps, key=jax.random.key(seed),
        optimizer=optimizer, ema_decay=ema_decay, log_every=log_every, progress=progress,
    )
    final = state.ema_params if (use_ema and ema_decay is not None) else state.params
    return final, history


def in_batches(fn: Callable[[jax.Array], jax.Array], x: jax.Array, batch: int = 4096) -> jax.Array:
    """Apply ``fn`` over the leading axis in chunks (bounded memory for evaluation)."""
    outs = [fn(x[i : i + batch]) for i in range(0, x.shape[0], batch)]
    return jnp.concatenate(outs, axis=0)


# --------------------------------------------------------------------------------------------
# Results and environment
# --------------------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    """Versions of the stack and the devices, recorded in every results.json."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("jax", "jaxlib", "flax", "optax", "diffrax", "orbax-checkpoint", "ott-jax", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "missing"
    devices = jax.devices()
    out["devices"] = f"{len(devices)} x {devices[0].device_kind}" if devices else "none"
    out["backend"] = jax.default_backend()
    return out


def to_jsonable(obj: Any) -> Any:
    """Convert arrays and numpy scalars inside nested containers to plain JSON types."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, jax.Array)):
        arr = np.asarray(obj)
        return arr.item() if arr.ndim == 0 else arr.tolist()
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    return obj


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON through a temporary file and an atomic rename (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(to_jsonable(payload), f, indent=2, sort_keys=True)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg backend, PNG)
# --------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_samples_2d(path: Path, panels: Mapping[str, Any], *, lim: float = 3.5, title: str | None = None) -> str:
    """One scatter panel per entry of ``panels`` (name -> (n, 2) points)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.3), squeeze=False)
    for ax, (name, pts) in zip(axes[0], panels.items()):
        pts = np.asarray(pts)
        ax.scatter(pts[:, 0], pts[:, 1], s=1.0, alpha=0.5)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path).name


def plot_loss_curves(path: Path, histories: Mapping[str, Sequence[Mapping[str, float]]], *, key: str = "loss") -> str:
    """Training curves (``history`` entries with ``step`` and ``key``), one line per run."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.3))
    for name, hist in histories.items():
        if hist:
            ax.plot([h["step"] for h in hist], [h[key] for h in hist], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path).name


def plot_trajectories_2d(path: Path, trajectories: Mapping[str, Any], *, lim: float = 3.5, num: int = 64) -> str:
    """Sample paths ``(T, n, 2)`` per panel: start points grey, end points coloured."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(trajectories), figsize=(3.2 * len(trajectories), 3.3), squeeze=False)
    for ax, (name, traj) in zip(axes[0], trajectories.items()):
        traj = np.asarray(traj)[:, :num]
        for i in range(traj.shape[1]):
            ax.plot(traj[:, i, 0], traj[:, i, 1], lw=0.6, alpha=0.6)
        ax.scatter(traj[0, :, 0], traj[0, :, 1], s=3, c="grey")
        ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=3, c="black")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path).name


def plot_image_grid(path: Path, images: Any, *, nrow: int = 8, title: str | None = None) -> str:
    """A grid of images ``(n, H, W, C)`` with values in ``[-1, 1]``."""
    plt = _plt()
    images = np.clip((np.asarray(images) + 1.0) / 2.0, 0.0, 1.0)
    n = images.shape[0]
    ncol = -(-n // nrow)
    fig, axes = plt.subplots(ncol, nrow, figsize=(nrow * 0.8, ncol * 0.8), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = images[i]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None, vmin=0, vmax=1)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path).name


def plot_curves(path: Path, curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, xlabel: str, ylabel: str,
                logx: bool = False, logy: bool = False, title: str | None = None) -> str:
    """Generic line plot: name -> (xs, ys), e.g. quality vs NFE."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.3))
    for name, (xs, ys) in curves.items():
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path).name
