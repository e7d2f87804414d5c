"""Run the toy Trainer in a subprocess (for the kill -9 / SIGTERM tests and the soak test).

    python tests/train/train_toy_run.py WORKDIR --steps 60 --checkpoint-every 5 [--mesh] [--sleep 0.02]

Prints ``BATCH <step>`` (flushed) whenever a batch is requested, so a test can kill the process
at a known point. The configuration matches ``tests/conftest.py`` (x64, strict rank promotion,
8 fake CPU devices through XLA_FLAGS inherited from the parent).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

import train_toy as toy  # noqa: E402

from flowjax import train  # noqa: E402


_STEP_FNS = {}


def toy_step(ema_decay=0.99, lr=3e-3):
    """(optimizer, step_fn), cached so that Trainers in one process share compiled code."""
    key = (ema_decay, lr)
    if key not in _STEP_FNS:
        optimizer = train.make_optimizer(lr)
        _STEP_FNS[key] = optimizer, train.make_train_step(toy.loss_fn, optimizer, ema_decay=ema_decay)
    return _STEP_FNS[key]


def build_trainer(workdir, *, steps, checkpoint_every, log_every, mesh=False, sleep=0.0, verbose=False,
                  steps_per_dispatch=1, seed=0, async_checkpoint=True, keep=3, handle_signals=True,
                  on_batch=None, batch_source=None, hidden=toy.HIDDEN, **trainer_kwargs):
    """The toy Trainer; used identically by the subprocess and by in-process reference runs."""
    params = toy.init_params(jax.random.key(seed), hidden=hidden)
    optimizer, step_fn = toy_step()
    state = train.create_train_state(params, optimizer, jax.random.key(seed + 1))
    base = toy.make_batch_fn(seed)

    def batch_fn(step):
        if verbose:
            print(f"BATCH {step}", flush=True)
        if sleep:
            time.sleep(sleep)
        if on_batch is not None:
            on_batch(step)
        return base(step)

    return train.Trainer(
        step_fn,
        state,
        batch_fn if batch_source is None else batch_source,
        workdir=workdir,
        total_steps=steps,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        keep=keep,
        mesh=train.make_mesh() if mesh else None,
        progress=False,
        steps_per_dispatch=steps_per_dispatch,
        async_checkpoint=async_checkpoint,
        handle_signals=handle_signals,
        **trainer_kwargs,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workdir")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--checkpoint-every", type=int, default=5)
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--keep", type=int, default=3)
    ap.add_argument("--mesh", action="store_true")
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--steps-per-dispatch", type=int, default=1)
    args = ap.parse_args()
    trainer = build_trainer(
        args.workdir,
        steps=args.steps,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        keep=args.keep,
        mesh=args.mesh,
        sleep=args.sleep,
        verbose=True,
        steps_per_dispatch=args.steps_per_dispatch,
    )
    print("START", flush=True)
    trainer.run()
    print(f"DONE {trainer.start_step}", flush=True)


if __name__ == "__main__":
    main()
