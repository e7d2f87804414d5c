"""Digits: TFDS array_record round trip, fixed split, grain determinism, sharding, checkpointing."""

import json

import numpy as np
import pytest

from flowjax.data import (
    DIGITS_NAME,
    digits_dataset,
    digits_source,
    find_prepared,
    load_digits_arrays,
    prepare_digits,
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tfds")
    prepare_digits(d)
    return d


def test_arrays_split_and_scale():
    xtr, ytr = load_digits_arrays("train")
    xte, yte = load_digits_arrays("test")
    assert xtr.shape == (1437, 8, 8, 1) and xte.shape == (360, 8, 8, 1)
    assert xtr.dtype == np.float32 and ytr.dtype == np.int32
    assert xtr.min() == -1.0 and xtr.max() == 1.0
    # pixels are k/16 mapped to 2k/16 - 1: a grid of 17 values
    np.testing.assert_allclose((xtr + 1) * 8, np.round((xtr + 1) * 8), atol=1e-5)
    assert set(np.unique(ytr)) == set(range(10)) == set(np.unique(yte))
    # split is a partition of sklearn's 1797 images: index % 5 == 0 is test
    from sklearn.datasets import load_digits

    raw = load_digits().images
    np.testing.assert_array_equal(xte[:, :, :, 0], raw[::5].astype(np.float32) / 8 - 1)
    with pytest.raises(ValueError, match="split"):
        load_digits_arrays("validation")


def test_tfds_round_trip_and_format(data_dir):
    version_dir = find_prepared(DIGITS_NAME, data_dir)
    info = json.loads((version_dir / "dataset_info.json").read_text())
    assert info["fileFormat"] == "array_record"
    assert any(p.name.endswith(".array_record-00000-of-00001") for p in version_dir.iterdir())
    for split in ("train", "test"):
        src = digits_source(split, data_dir=data_dir)
        x, y = load_digits_arrays(split)
        assert len(src) == len(y)
        items = [src[i] for i in range(len(src))]
        imgs = np.stack([it["image"] for it in items])
        assert imgs.dtype == np.uint8 and imgs.shape[1:] == (8, 8, 1)
        np.testing.assert_array_equal(imgs.astype(np.float32) / 8 - 1, x)
        np.testing.assert_array_equal([it["label"] for it in items], y)
    # preparing again is a no-op (no rebuild)
    mtime = (version_dir / "dataset_info.json").stat().st_mtime_ns
    prepare_digits(data_dir)
    assert (version_dir / "dataset_info.json").stat().st_mtime_ns == mtime


def _take(ds, k):
    it = iter(ds.to_iter_dataset())
    return [next(it) for _ in range(k)]


def test_grain_determinism_and_epochs(data_dir):
    kw = dict(batch_size=64, data_dir=data_dir, process_index=0, process_count=1)
    a = _take(digits_dataset("train", seed=3, **kw), 3)
    b = _take(digits_dataset("train", seed=3, **kw), 3)
    c = _take(digits_dataset("train", seed=4, **kw), 3)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u["image"], v["image"])
        np.testing.assert_array_equal(u["label"], v["label"])
    assert not np.array_equal(a[0]["image"], c[0]["image"])
    assert a[0]["image"].shape == (64, 8, 8, 1) and a[0]["image"].dtype == np.float32
    assert a[0]["label"].dtype == np.int32

    # One epoch without dropping covers every training image exactly once.
    x, y = load_digits_arrays("train")
    ds = digits_dataset("train", seed=0, batch_size=100, num_epochs=1, drop_remainder=False,
                        data_dir=data_dir, process_index=0, process_count=1)
    batches = list(ds)
    assert len(batches) == 15
    got = np.concatenate([bt["image"] for bt in batches]).reshape(len(y), -1)
    want = x.reshape(len(y), -1)
    order = lambda m: m[np.lexsort(m.T[::-1])]
    np.testing.assert_array_equal(order(got), order(want))
    np.testing.assert_array_equal(np.sort(np.concatenate([bt["label"] for bt in batches])), np.sort(y))

    # With repetition, the second epoch is a different permutation.
    ds_inf = digits_dataset("train", seed=0, batch_size=1437, data_dir=data_dir, process_index=0, process_count=1)
    assert not np.array_equal(ds_inf[0]["label"], ds_inf[1]["label"])
    np.testing.assert_array_equal(np.sort(ds_inf[1]["label"]), np.sort(y))


@pytest.mark.parametrize("pc", [2, 4])
def test_process_slices_partition_global_batch(data_dir, pc):
    b = 32
    glob = digits_dataset("train", seed=5, batch_size=b, data_dir=data_dir, process_index=0, process_count=1)
    locs = [digits_dataset("train", seed=5, batch_size=b, data_dir=data_dir, process_index=p, process_count=pc)
            for p in range(pc)]
    for step in [0, 1, 44, 45]:  # 44/45 straddle the first epoch boundary (1437 / 32 = 44.9)
        g = glob[step]
        parts = [loc[step] for loc in locs]
        assert all(part["image"].shape == (b // pc, 8, 8, 1) for part in parts)
        # process p holds rows p, p + P, p + 2P, ... of the global batch
        inter = np.stack([part["image"] for part in parts], axis=1).reshape(g["image"].shape)
        np.testing.assert_array_equal(inter, g["image"])


def test_checkpointable_iterator(data_dir):
    ds = digits_dataset("train", seed=1, batch_size=50, data_dir=data_dir, process_index=0, process_count=1)
    it = iter(ds.to_iter_dataset())
    for _ in range(31):  # past the first epoch (28 full batches)
        next(it)
    state = it.get_state()
    json.dumps(state)  # plain, serialisable
    after = [next(it) for _ in range(3)]
    it2 = iter(ds.to_iter_dataset())
    it2.set_state(state)
    for u in after:
        v = next(it2)
        np.testing.assert_array_equal(u["image"], v["image"])
        np.testing.assert_array_equal(u["label"], v["label"])


def test_bad_arguments(data_dir):
    with pytest.raises(ValueError, match="divisible"):
        digits_dataset("train", seed=0, batch_size=10, data_dir=data_dir, process_index=0, process_count=3)
    with pytest.raises(ValueError, match="process_index"):
        digits_dataset("train", seed=0, batch_size=10, data_dir=data_dir, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="split"):
        digits_source("valid", data_dir=data_dir)
