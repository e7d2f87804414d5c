"""Checkpoints: exact round trips, resharding, corruption fallback, mismatch errors, no pickle."""

from __future__ import annotations

import gc
import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import train_toy as toy
from flowjax import train
from flowjax.train import sharding as shd
from flowjax.train.checkpoint import Checkpointer, abstract_state, tree_checksums

# A failed tensorstore read (the corruption tests) leaves an Orbax asyncio callback that fires on a
# closed event loop when garbage-collected; it is noise, collected here so it stays in this module.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _state(step=0, hidden=8, scale=1.0):
    params = toy.init_params(jax.random.key(0), hidden=hidden)
    params = jax.tree.map(lambda p: p * scale + step, params)
    st = train.create_train_state(params, train.make_optimizer(1e-3), jax.random.key(1))
    return st.replace(step=jnp.asarray(step, jnp.int32))


def _assert_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _data_files(step_dir: Path):
    return sorted(p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d")


def test_roundtrip_exact_and_extra(tmp_path):
    with Checkpointer(tmp_path / "ck", keep=2, async_save=False) as ck:
        for s in (1, 2, 3):
            ck.save(s, _state(s), extra={"data_state": {"position": s}})
        assert ck.steps() == [2, 3]  # keep=2
        step, st, extra = ck.restore_latest(_state(0))
    assert step == 3 and extra["data_state"] == {"position": 3}
    _assert_equal(st, _state(3))
    assert isinstance(st, train.TrainState)


def test_restore_reshards_between_meshes(tmp_path):
    mesh = train.make_mesh(2, 4)
    sharded = shd.shard_state(_state(5), mesh)
    assert sharded.params["l1"]["w"].sharding.spec[1] == "fsdp"
    with Checkpointer(tmp_path / "ck") as ck:
        ck.save(5, sharded)
        ck.wait()
        # 8 devices (fsdp=4) -> 1 device
        _, single, _ = ck.restore_latest(_state(0))
        assert len(single.params["l1"]["w"].devices()) == 1
        _assert_equal(single, _state(5))
        # -> a different mesh (fsdp=2), through an abstract target with shardings
        mesh2 = train.make_mesh(4, 2)
        target = abstract_state(_state(0), shd.state_sharding(_state(0), mesh2))
        _, resharded, _ = ck.restore_latest(target)
        assert resharded.params["l1"]["w"].sharding.mesh.shape["fsdp"] == 2
        _assert_equal(resharded, _state(5))
    # checksums do not depend on the sharding
    assert tree_checksums(sharded) == tree_checksums(_state(5))


def test_checksum_detects_any_change():
    st = _state(1)
    base = tree_checksums(st)
    w = st.params["l1"]["w"]
    flipped = w.at[2, 3].set(jnp.nextafter(w[2, 3], jnp.inf))  # one ulp
    swapped = w.at[0, 0].set(w[0, 1]).at[0, 1].set(w[0, 0])  # same values, other order
    for bad in (flipped, swapped):
        sums = tree_checksums(st.replace(params={**st.params, "l1": {**st.params["l1"], "w": bad}}))
        assert sums["params['l1']['w']"] != base["params['l1']['w']"]
        assert sums["params['l1']['b']"] == base["params['l1']['b']"]


@pytest.mark.parametrize("damage", ["bitflip", "truncate", "meta", "missing"])
def test_corrupt_newest_falls_back_to_previous(tmp_path, damage, caplog):
    root = tmp_path / "ck"
    with Checkpointer(root, keep=3, async_save=False) as ck:
        ck.save(1, _state(1))
        ck.save(2, _state(2))
    step_dir = root / "2"
    if damage == "bitflip":
        for f in _data_files(step_dir):
            b = bytearray(f.read_bytes())
            b[len(b) // 2] ^= 0x01
            f.write_bytes(bytes(b))
    elif damage == "truncate":
        for f in _data_files(step_dir):
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 3])
    elif damage == "meta":
        meta = next(p for p in (step_dir / "meta").rglob("*") if p.is_file() and p.name == "metadata")
        meta.write_text(meta.read_text()[:20])
    else:
        for f in _data_files(step_dir):
            f.unlink()
    with Checkpointer(root, keep=3) as ck:
        step, st, _ = ck.restore_latest(_state(0))
        assert step == 1
        _assert_equal(st, _state(1))
        assert len(ck.last_restore_errors) == 1 and "checkpoint" in ck.last_restore_errors[0]
        assert ck.steps() == [1]  # the bad step was moved aside ...
        ck.save(2, _state(2))  # ... so that step 2 can be written again
        ck.wait()
        assert ck.steps() == [1, 2]
    assert len(list((tmp_path / "corrupt_checkpoints").iterdir())) == 1
    gc.collect()


def test_interrupted_save_is_ignored(tmp_path):
    """kill -9 during a save leaves `<step>.orbax-checkpoint-tmp*`: never picked, cleaned on start."""
    root = tmp_path / "ck"
    with Checkpointer(root, async_save=False) as ck:
        ck.save(1, _state(1))
        ck.save(2, _state(2))
    # simulate a save of step 3 killed half way: a temporary directory with partial content
    import shutil

    shutil.copytree(root / "2", root / "3.orbax-checkpoint-tmp-1234567")
    for f in _data_files(root / "3.orbax-checkpoint-tmp-1234567")[1:]:
        f.unlink()
    with Checkpointer(root) as ck:
        assert ck.steps() == [1, 2]
        step, st, _ = ck.restore_latest(_state(0))
        assert step == 2
        _assert_equal(st, _state(2))
        ck.save(3, _state(3))
        ck.wait()
        assert ck.steps() == [1, 2, 3]
    assert not any("tmp" in p.name for p in root.iterdir())


def test_mismatch_names_the_leaf(tmp_path):
    with Checkpointer(tmp_path / "ck", async_save=False) as ck:
        ck.save(1, _state(1, hidden=8))
        with pytest.raises(train.CheckpointMismatchError, match=r"leaf `params\['l1'\]\['b'\]`: expected shape \(16,\) dtype float64, found shape \(8,\)"):
            ck.restore_latest(_state(0, hidden=16))
        other = _state(0).replace(params={"l1": _state(0).params["l1"]})  # a leaf fewer
        with pytest.raises(train.CheckpointMismatchError, match=r"it has leaves the model lacks, e.g. `params\['l2'\]"):
            ck.restore_latest(other)
        f32 = jax.tree.map(lambda x: x.astype(jnp.float32) if x.dtype == jnp.float64 else x, _state(0))
        with pytest.raises(train.CheckpointMismatchError, match="dtype float32, found shape .* dtype float64"):
            ck.restore_latest(f32)
        assert ck.steps() == [1]  # a mismatch is the user's error: nothing is moved aside


def test_restore_never_unpickles(tmp_path, monkeypatch):
    with Checkpointer(tmp_path / "ck", async_save=False) as ck:
        ck.save(1, _state(1), extra={"data_state": {"kind": "json", "value": [1, 2]}})

    def forbidden(*a, **k):
        raise AssertionError("pickle used during checkpoint restore")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    with Checkpointer(tmp_path / "ck") as ck:
        step, st, extra = ck.restore_latest(_state(0))
    assert step == 1 and extra["data_state"]["value"] == [1, 2]
    _assert_equal(st, _state(1))


def test_extra_must_be_json(tmp_path):
    with Checkpointer(tmp_path / "ck", async_save=False) as ck:
        with pytest.raises(TypeError, match="JSON-serialisable"):
            ck.save(1, _state(1), extra={"obj": object()})


def test_keep_last_n_and_best(tmp_path):
    losses = {1: 5.0, 2: 1.0, 3: 4.0, 4: 3.0, 5: 6.0}
    with Checkpointer(tmp_path / "ck", keep=2, best_metric="eval/loss", best_mode="min", async_save=False) as ck:
        for s, v in losses.items():
            ck.save(s, _state(s), metrics={"eval/loss": v})
        assert ck.steps() == [2, 4, 5]  # the best (2) and the last two


def test_bad_arguments():
    with pytest.raises(ValueError, match="`keep` must be a positive integer, got 0"):
        Checkpointer("/tmp/never-created-flowjax", keep=0)
    with pytest.raises(ValueError, match="`best_mode` must be 'min' or 'max', got 'lowest'"):
        Checkpointer("/tmp/never-created-flowjax", best_mode="lowest")
