"""Digits Frechet distance: the project's classifier trains deterministically, caches, and separates
real digits from corrupted ones."""

import json

import numpy as np
import pytest

from flowjax import metrics
from flowjax._digits_classifier import CONFIG, config_hash
from flowjax.data import load_digits_arrays


@pytest.fixture(scope="module")
def clf_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("clf")
    metrics.load_digits_classifier(d)  # trains once (a few seconds) and caches
    return d


def test_classifier_accuracy_and_cache(clf_dir):
    clf = metrics.load_digits_classifier(clf_dir)
    x, y = load_digits_arrays("test")
    acc = clf.accuracy(x, y)
    assert acc == pytest.approx(clf.test_accuracy, abs=1e-9)
    assert acc >= 0.95, f"digits classifier test accuracy {acc:.4f}"
    assert clf.path.name == f"{config_hash(CONFIG)}.npz"
    meta = json.loads(clf.path.with_suffix(".json").read_text())
    assert meta["config"] == CONFIG and meta["test_accuracy"] == clf.test_accuracy
    mtime = clf.path.stat().st_mtime_ns
    again = metrics.load_digits_classifier(clf_dir)  # from the cache: same weights, no rewrite
    assert clf.path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.features(x[:10]), clf.features(x[:10]))
    assert clf.features(x).shape == (360, 64)


def test_digits_fd_orders_sets(clf_dir):
    xtr, _ = load_digits_arrays("train")
    xte, _ = load_digits_arrays("test")
    rng = np.random.default_rng(0)
    same = metrics.digits_fd(xte, xte, data_dir=clf_dir)
    real = metrics.digits_fd(xtr, xte, data_dir=clf_dir)
    noisy = metrics.digits_fd(np.clip(xte + 0.3 * rng.standard_normal(xte.shape), -1, 1), xte, data_dir=clf_dir)
    uniform = metrics.digits_fd(rng.uniform(-1, 1, xte.shape), xte, data_dir=clf_dir)
    assert same == pytest.approx(0.0, abs=1e-6)
    assert 0 < real < noisy < uniform, (real, noisy, uniform)
    # shapes (n, 8, 8) and (n, 64) are accepted and equivalent
    assert metrics.digits_fd(xtr.reshape(-1, 64), xte[..., 0], data_dir=clf_dir) == pytest.approx(real, rel=1e-6)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        metrics.digits_fd((xte + 1) * 8, xte, data_dir=clf_dir)


@pytest.mark.slow
def test_retraining_is_deterministic(clf_dir, tmp_path):
    a = metrics.load_digits_classifier(clf_dir)
    b = metrics.load_digits_classifier(tmp_path, retrain=True)
    x, _ = load_digits_arrays("test")
    np.testing.assert_array_equal(a.features(x), b.features(x))
