"""Real processes: SIGTERM -> final checkpoint and exit code 0; kill -9 -> resume equals unbroken.

A training subprocess (tests/train/train_toy_run.py) is killed at a known step; the run is then resumed
in this process and compared with an unbroken in-process run of the same seed. The slow tests
kill at random moments (including during saves) and run a 20k-step soak.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import train_toy_run as run_toy

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

SCRIPT = str(Path(run_toy.__file__).resolve())
CFG = dict(steps=40, checkpoint_every=5, log_every=5)


def _spawn(workdir, *, mesh=False, sleep=0.02, steps=CFG["steps"], checkpoint_every=CFG["checkpoint_every"],
           log_every=CFG["log_every"], extra=()):
    cmd = [sys.executable, SCRIPT, str(workdir), "--steps", str(steps), "--checkpoint-every", str(checkpoint_every),
           "--log-every", str(log_every), "--sleep", str(sleep), *extra]
    if mesh:
        cmd.append("--mesh")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    # Drain both pipes in threads so that a chatty child never blocks on a full pipe.
    proc.lines = queue.Queue()
    proc.err_tail = []

    def pump_out():
        for line in proc.stdout:
            proc.lines.put(line.strip())
        proc.lines.put(None)

    def pump_err():
        for line in proc.stderr:
            proc.err_tail = (proc.err_tail + [line])[-50:]

    threading.Thread(target=pump_out, daemon=True).start()
    threading.Thread(target=pump_err, daemon=True).start()
    return proc


def _wait_for_line(proc, text, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            line = proc.lines.get(timeout=1.0)
        except queue.Empty:
            continue
        if line is None:
            proc.wait()
            raise AssertionError(f"subprocess ended before {text!r}; stderr: {''.join(proc.err_tail)[-3000:]}")
        if line == text:
            return
    proc.kill()
    raise AssertionError(f"timeout waiting for {text!r}")


def _finish(proc, timeout):
    proc.wait(timeout=timeout)
    lines = []
    while True:
        try:
            line = proc.lines.get(timeout=5.0)
        except queue.Empty:
            break
        if line is None:
            break
        lines.append(line)
    return lines


def _equal_trees(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _steps_on_disk(workdir):
    return sorted(int(p.name) for p in (Path(workdir) / "checkpoints").iterdir() if p.name.isdigit())


def test_sigterm_subprocess_saves_and_exits_cleanly(tmp_path):
    proc = _spawn(tmp_path / "run")
    _wait_for_line(proc, "BATCH 17")
    proc.send_signal(signal.SIGTERM)
    out = _finish(proc, timeout=120)
    assert proc.returncode == 0, "".join(proc.err_tail)[-3000:]
    assert not any(line.startswith("DONE") for line in out)
    last = _steps_on_disk(tmp_path / "run")[-1]
    assert 18 <= last < CFG["steps"]  # the preemption save (after the step that was running)
    resumed = run_toy.build_trainer(tmp_path / "run", **CFG)
    state = resumed.run()
    assert resumed.restored_step == last
    ref = run_toy.build_trainer(tmp_path / "ref", **CFG)
    ref_state = ref.run()
    _equal_trees(state, ref_state)
    assert resumed.history == ref.history


def test_kill9_subprocess_on_8_devices_resumes_exactly(tmp_path):
    proc = _spawn(tmp_path / "run", mesh=True)
    _wait_for_line(proc, "BATCH 23")
    proc.kill()  # SIGKILL: no handler runs
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert _steps_on_disk(tmp_path / "run")[-1] in (15, 20)
    resumed = run_toy.build_trainer(tmp_path / "run", mesh=True, **CFG)
    state = resumed.run()
    assert resumed.restored_step in (15, 20)
    assert len(state.params["l1"]["w"].devices()) == 8
    ref = run_toy.build_trainer(tmp_path / "ref", mesh=True, **CFG)
    ref_state = ref.run()
    _equal_trees(state, ref_state)
    assert resumed.history == ref.history


@pytest.mark.slow
@pytest.mark.parametrize("mesh", [False, True])
def test_kill9_at_random_moments_including_saves(tmp_path, mesh):
    """Checkpoint every step (so most kills land inside a save); kill -9 five times at random."""
    rng = random.Random(1234 + mesh)
    cfg = dict(steps=60, checkpoint_every=1, log_every=3)
    wd = tmp_path / "run"
    for _ in range(5):
        proc = _spawn(wd, mesh=mesh, sleep=0.0, **cfg)
        _wait_for_line(proc, "START")
        time.sleep(rng.uniform(0.5, 4.0))
        proc.kill()
        proc.wait(timeout=60)
    resumed = run_toy.build_trainer(wd, mesh=mesh, **cfg)
    state = resumed.run()
    ref = run_toy.build_trainer(tmp_path / "ref", mesh=mesh, **cfg)
    _equal_trees(state, ref.run())
    assert resumed.history == ref.history


def _rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@pytest.mark.slow
def test_soak_20k_steps_memory_flat_and_kill_resume_equal(tmp_path):
    """20k steps, checkpoints every 500: memory stays flat; killed 3x + resumed == unbroken."""
    cfg = dict(steps=20_000, checkpoint_every=500, log_every=100)
    # Unbroken run in a subprocess, sampling its RSS.
    proc = _spawn(tmp_path / "unbroken", sleep=0.0, **cfg)
    _wait_for_line(proc, "BATCH 2000")
    rss = []
    while proc.poll() is None:
        try:
            rss.append(_rss_mib(proc.pid))
        except OSError:
            break
        time.sleep(0.5)
    _finish(proc, timeout=60)
    assert proc.returncode == 0, "".join(proc.err_tail)[-3000:]
    rss = [r for r in rss if r == r]
    assert len(rss) >= 4
    growth = max(rss[len(rss) // 4 :]) - rss[len(rss) // 4]
    assert growth < 50, f"RSS grew by {growth:.1f} MiB over the run: {rss[::max(1, len(rss) // 10)]}"
    # Killed three times at different steps, then finished.
    wd = tmp_path / "killed"
    for kill_at in (3_210, 9_876, 15_001):
        proc = _spawn(wd, sleep=0.0, **cfg)
        _wait_for_line(proc, f"BATCH {kill_at}")
        proc.kill()
        proc.wait(timeout=60)
    proc = _spawn(wd, sleep=0.0, **cfg)
    out = _finish(proc, timeout=1800)
    assert proc.returncode == 0, "".join(proc.err_tail)[-3000:]
    # The save at 15000 may still have been in flight when the kill came: then 14500 is the newest
    # complete checkpoint.
    assert out[-1] in ("DONE 15000", "DONE 14500")
    print(f"soak: RSS samples (MiB) {rss[::max(1, len(rss) // 10)]}, growth after warm-up {growth:.1f} MiB; "
          f"final resume from {out[-1].split()[1]}")
    a = [json.loads(l) for l in (tmp_path / "unbroken" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in a] == list(range(100, 20_001, 100))
    assert a == b  # the same loss curve, record for record
