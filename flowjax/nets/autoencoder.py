"""Autoencoders for latent flow matching: a small conv autoencoder trained by the project, latent
scaling, and loading a user's own pretrained encoder/decoder from a local checkpoint.

Latent flow matching (Dao et al., "Flow Matching in Latent Space", arXiv 2307.08698; spec
``latent-fm.md``) trains the velocity field on ``z1 = scale * (E(x1) - shift)`` and samples
``x = D(z / scale + shift)``. The per-latent scaling to unit std is the analogue of Stable
Diffusion's 0.18215 (the paper's); the conv architecture, the MSE-only training and the npz
checkpoint format are ours. Checkpoints are read from local files only (no hub at run time).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from jaxtyping import Array

from flowjax._checks import check_float_array, check_positive_int
from flowjax.nets.init import init_variables


class ConvAutoencoder(nn.Module):
    """Conv encoder ``(n, H, W, C) -> (n, latent_dim)`` and decoder back (H, W divisible by 2).

    Encoder: Conv(ch, 3x3) -> SiLU -> Conv(2ch, 3x3, stride 2) -> SiLU -> Dense(latent_dim).
    Decoder: Dense -> (H/2, W/2, 2ch) -> ConvTranspose(ch, stride 2) -> SiLU -> Conv(C, 3x3).
    """

    image_shape: tuple[int, int, int] = (8, 8, 1)
    latent_dim: int = 8
    channels: int = 16

    def setup(self):
        h, w, c = self.image_shape
        ch = self.channels
        self.enc1 = nn.Conv(ch, (3, 3))
        self.enc2 = nn.Conv(2 * ch, (3, 3), strides=(2, 2))
        self.enc_out = nn.Dense(self.latent_dim)
        self.dec_in = nn.Dense((h // 2) * (w // 2) * 2 * ch)
        self.dec1 = nn.ConvTranspose(ch, (3, 3), strides=(2, 2))
        self.dec_out = nn.Conv(c, (3, 3))

    def encode(self, x: Array) -> Array:
        n = x.shape[0]
        h = nn.silu(self.enc1(x))
        h = nn.silu(self.enc2(h))
        return self.enc_out(h.reshape(n, -1))

    def decode(self, z: Array) -> Array:
        h_, w_, _ = self.image_shape
        n = z.shape[0]
        h = nn.silu(self.dec_in(z)).reshape(n, h_ // 2, w_ // 2, 2 * self.channels)
        h = nn.silu(self.dec1(h))
        return self.dec_out(h)

    def __call__(self, x: Array) -> Array:
        return self.decode(self.encode(x))


def _row(v: Any, like: Array) -> Array:
    """Per-dimension (or scalar) scale/shift broadcast explicitly against a batch ``like``."""
    v = jnp.asarray(v, like.dtype)
    return v.reshape((1,) * (like.ndim - v.ndim) + v.shape)


@dataclasses.dataclass(frozen=True)
class LatentAutoencoder:
    """A frozen autoencoder with latent normalisation ``z = scale * (E(x) - shift)``.

    ``module`` is any Flax module with ``encode`` and ``decode`` methods (ours or the user's);
    ``scale``/``shift`` are per-latent-dimension arrays (or scalars).
    """

    module: nn.Module
    params: Any
    scale: Any = 1.0
    shift: Any = 0.0

    def encode(self, x: Array) -> Array:
        """Scaled latent ``scale * (E(x) - shift)``."""
        check_float_array("x", x, min_ndim=2)
        raw = self.module.apply(self.params, x, method="encode")
        return (raw - _row(self.shift, raw)) * _row(self.scale, raw)

    def decode(self, z: Array) -> Array:
        """Image ``D(z / scale + shift)``."""
        check_float_array("z", z, min_ndim=2)
        raw = z / _row(self.scale, z) + _row(self.shift, z)
        return self.module.apply(self.params, raw, method="decode")

    def with_latent_scaling(self, x: Array, *, per_dim: bool = True) -> "LatentAutoencoder":
        """Return a copy whose latents of ``x`` have zero mean and unit std (per dim or overall)."""
        raw = np.asarray(self.module.apply(self.params, x, method="encode"), np.float64)
        shift = raw.mean(0) if per_dim else raw.mean()
        std = raw.std(0) if per_dim else raw.std()
        return dataclasses.replace(self, scale=np.asarray(1.0 / np.maximum(std, 1e-8), np.float32), shift=np.asarray(shift, np.float32))

    def save(self, path: str | pathlib.Path, *, config: dict | None = None) -> pathlib.Path:
        """Write params, scale and shift to a local ``.npz`` (``config`` stored as JSON)."""
        return save_checkpoint(path, self.params, scale=self.scale, shift=self.shift, config=config)


def save_checkpoint(path: str | pathlib.Path, params: Any, *, scale: Any = 1.0, shift: Any = 0.0, config: dict | None = None) -> pathlib.Path:
    """Save a parameter pytree (nested dicts of arrays) plus latent scaling to ``path`` (.npz)."""
    path = pathlib.Path(path)
    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    arrays = {f"params/{k}": np.asarray(v) for k, v in flat.items()}
    arrays["__scale__"] = np.asarray(scale, np.float32)
    arrays["__shift__"] = np.asarray(shift, np.float32)
    arrays["__config__"] = np.asarray(json.dumps(config or {}))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def load_pretrained(path: str | pathlib.Path, module: nn.Module | None = None) -> LatentAutoencoder:
    """Load a user's (or our) pretrained autoencoder from a local ``.npz`` written by :func:`save_checkpoint`.

    ``module`` is the Flax module with ``encode``/``decode`` the params belong to; if omitted, a
    :class:`ConvAutoencoder` is rebuilt from the stored config. Parameter structure is checked
    against ``module.init`` so a mismatched checkpoint fails loudly, naming the first bad key.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path`: no checkpoint file at {str(path)!r} (only local files are read).")
    with np.load(path, allow_pickle=False) as data:
        config = json.loads(str(data["__config__"]))
        scale, shift = np.asarray(data["__scale__"]), np.asarray(data["__shift__"])
        flat = {k[len("params/"):]: np.asarray(data[k]) for k in data.files if k.startswith("params/")}
    params = traverse_util.unflatten_dict(flat, sep="/")
    if module is None:
        module = ConvAutoencoder(image_shape=tuple(config.get("image_shape", (8, 8, 1))), latent_dim=int(config.get("latent_dim", 8)),
                                 channels=int(config.get("channels", 16)))
    h, w, c = getattr(module, "image_shape", (None, None, None))
    if h is not None:
        ref = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, h, w, c))))
        ref_flat = traverse_util.flatten_dict(ref, sep="/")
        for k, v in ref_flat.items():
            if k not in flat or tuple(flat[k].shape) != tuple(v.shape):
                got = None if k not in flat else flat[k].shape
                raise ValueError(f"checkpoint {str(path)!r} does not match `module`: key {k!r} expected shape {v.shape}, got {got}.")
    return LatentAutoencoder(module=module, params=params, scale=scale, shift=shift)


def train_autoencoder(
    images: Any,
    *,
    latent_dim: int = 8,
    channels: int = 16,
    steps: int = 3000,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> tuple[LatentAutoencoder, list[float]]:
    """Train a :class:`ConvAutoencoder` with pixel MSE (Adam), then fit the latent scaling on ``images``.

    Returns the frozen, scaled autoencoder and the loss history (every step).
    """
    check_float_array("images", images, ndim=4)
    check_positive_int("steps", steps)
    x = jnp.asarray(images, jnp.float32)
    module = ConvAutoencoder(image_shape=tuple(int(s) for s in x.shape[1:]), latent_dim=latent_dim, channels=channels)
    params = init_variables(module, jax.random.key(seed), x[:2])
    opt = optax.adam(learning_rate)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, key):
        idx = jax.random.randint(key, (min(batch_size, x.shape[0]),), 0, x.shape[0])
        batch = x[idx]
        loss, g = jax.value_and_grad(lambda p: jnp.mean((module.apply(p, batch) - batch) ** 2))(params)
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    hist = []
    key = jax.random.key(seed + 1)
    for i in range(steps):
        params, opt_state, loss = step(params, opt_state, jax.random.fold_in(key, i))
        hist.append(loss)
    hist = [float(v) for v in jax.device_get(hist)]
    ae = LatentAutoencoder(module=module, params=params).with_latent_scaling(x)
    return ae, hist
