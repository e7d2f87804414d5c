"""The MNIST / CIFAR-10 path, exercised with locally built stand-ins in TFDS's on-disk format.

Real MNIST and CIFAR-10 store `tfds.features.Image` (PNG-encoded uint8) plus a ClassLabel; the
stand-ins below do the same (PNG bytes written with PIL, since encoding arrays needs TensorFlow),
are built to array_record under a temporary data_dir, and are read back through the same public
functions a user calls on a prepared MNIST.
"""

import io
import json
import shutil

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from flowjax.data import DATA_DIR_ENV, default_data_dir, load_tfds_images, tfds_image_dataset, tfds_source

_N = {"train": 24, "test": 8}


def _images(split, shape):
    rng = np.random.default_rng(0 if split == "train" else 1)
    return rng.integers(0, 256, (_N[split],) + shape, dtype=np.uint8)


def _png(a):
    buf = io.BytesIO()
    PIL.Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(buf, format="png")
    return buf.getvalue()


class _StandinBase(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("3.0.1")
    code_path = None  # no checksums file to look up
    SHAPE = (28, 28, 1)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description="test stand-in",
            features=tfds.features.FeaturesDict(
                {"image": tfds.features.Image(shape=self.SHAPE), "label": tfds.features.ClassLabel(num_classes=10)}
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        return {s: self._generate_examples(s) for s in _N}

    def _generate_examples(self, split):
        for i, a in enumerate(_images(split, self.SHAPE)):
            yield i, {"image": _png(a), "label": i % 10}


class FlowjaxTestMnistStandin(_StandinBase):
    SHAPE = (28, 28, 1)


class FlowjaxTestCifarStandin(_StandinBase):
    SHAPE = (32, 32, 3)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tfds_standin")
    for cls in (FlowjaxTestMnistStandin, FlowjaxTestCifarStandin):
        cls(data_dir=str(d), file_format="array_record").download_and_prepare()
    return d


@pytest.mark.parametrize("cls", [FlowjaxTestMnistStandin, FlowjaxTestCifarStandin])
def test_load_in_memory(data_dir, cls):
    for split in _N:
        x, y = load_tfds_images(cls.name, split, data_dir)
        raw = _images(split, cls.SHAPE)
        assert x.shape == raw.shape and x.dtype == np.float32 and y.dtype == np.int32
        np.testing.assert_allclose(x, raw.astype(np.float32) / 127.5 - 1.0, atol=1e-6)
        np.testing.assert_array_equal(y, np.arange(_N[split]) % 10)
    x, _ = load_tfds_images(cls.name, "train", data_dir, max_examples=5)
    assert x.shape[0] == 5


def test_grain_pipeline_sharded(data_dir):
    name = FlowjaxTestCifarStandin.name
    glob = tfds_image_dataset(name, "train", data_dir=data_dir, batch_size=8, seed=0, process_index=0, process_count=1)
    parts = [tfds_image_dataset(name, "train", data_dir=data_dir, batch_size=8, seed=0, process_index=p, process_count=2)
             for p in range(2)]
    for step in range(4):  # 3 steps per epoch: crosses an epoch boundary
        g = glob[step]
        assert g["image"].shape == (8, 32, 32, 3) and g["image"].dtype == np.float32
        assert g["image"].min() >= -1.0 and g["image"].max() <= 1.0
        inter = np.stack([p[step]["image"] for p in parts], axis=1).reshape(g["image"].shape)
        np.testing.assert_array_equal(inter, g["image"])
    # unshuffled single pass is the stored order
    seq = list(tfds_image_dataset(name, "test", data_dir=data_dir, batch_size=8, seed=0, shuffle=False,
                                  num_epochs=1, process_index=0, process_count=1))
    assert len(seq) == 1
    np.testing.assert_allclose(seq[0]["image"], _images("test", (32, 32, 3)) / 127.5 - 1.0, atol=1e-6)


def test_missing_dataset_explains_preparation(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)not prepared.*tfds build mnist.*--file_format=array_record.*FLOWJAX_DATA_DIR"):
        load_tfds_images("mnist", "train", tmp_path)
    assert not (tmp_path / "mnist").exists()  # nothing was created or downloaded


def test_tfrecord_dataset_is_rejected(data_dir, tmp_path):
    src = data_dir / FlowjaxTestMnistStandin.name
    dst = tmp_path / "mnist"
    shutil.copytree(src, dst)
    info_path = dst / "3.0.1" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["fileFormat"] = "tfrecord"
    info_path.write_text(json.dumps(info))
    with pytest.raises(ValueError, match="array_record"):
        tfds_source("mnist", "train", data_dir=tmp_path)


def test_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv(DATA_DIR_ENV)
    assert default_data_dir().parts[-3:] == (".cache", "flowjax", "tfds")
