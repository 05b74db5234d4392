"""MVTec 3D-AD layout reader/writer (real cable_gland subset when present, else skipped)."""
import numpy as np
import pytest

from helpers import SHARED_DATA
from mentor3ad.io.datasets.mvtec import load_mvtec_sample, load_mvtec_split, write_mvtec_sample
from mentor3ad.types import Sample

needs_data = pytest.mark.skipif(not (SHARED_DATA / "train").is_dir(), reason=f"MVTec 3D-AD data not at {SHARED_DATA}")


@needs_data
def test_cable_gland_splits_and_few_shot():
    train = load_mvtec_split(SHARED_DATA, "train", shots=5)
    assert [s.name for s in train] == [f"train/good/{i:03d}" for i in range(5)]
    s = train[0]
    assert s.rgb.dtype == np.uint8 and s.rgb.shape[2] == 3
    assert s.xyz.dtype == np.float32 and s.xyz.shape == s.rgb.shape
    assert s.label == 0 and s.mask is None
    assert len(load_mvtec_split(SHARED_DATA, "validation")) == 10  # the subset: 100 train, 10 validation, 30 test
    test = load_mvtec_split(SHARED_DATA, "test", defects=["good", "bent"])
    assert [t.defect for t in test] == ["good"] * 6 + ["bent"] * 6
    assert all(t.mask is not None for t in test)
    assert all(t.mask.sum() == 0 for t in test[:6]) and all(t.mask.sum() > 0 for t in test[6:])
    assert {t.label for t in test[6:]} == {1}
    with pytest.raises(ValueError, match="no defect folder.*scratch"):
        load_mvtec_split(SHARED_DATA, "test", defects=["scratch"])


def test_write_then_read_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    xyz = rng.normal(size=(6, 8, 3)).astype(np.float32)
    xyz[0, 0] = np.nan
    mask = np.zeros((6, 8), np.uint8)
    mask[2:4, 3:5] = 1
    write_mvtec_sample(tmp_path, "test", "dent", 0, Sample(rgb=rgb, xyz=xyz, mask=mask, label=1, defect="dent"))
    write_mvtec_sample(tmp_path, "test", "good", 0, Sample(rgb=rgb, xyz=xyz))
    write_mvtec_sample(tmp_path, "train", "good", 1, Sample(rgb=rgb, xyz=xyz))
    write_mvtec_sample(tmp_path, "train", "good", 0, Sample(rgb=rgb, xyz=xyz))
    test = load_mvtec_split(tmp_path, "test")
    assert [t.name for t in test] == ["test/good/000", "test/dent/000"]
    assert np.array_equal(test[1].rgb, rgb) and np.array_equal(test[1].mask, mask)
    assert (test[1].xyz[0, 0] == 0).all()  # NaN written as MVTec's all-zero background
    assert np.array_equal(test[1].xyz[1:], xyz[1:])
    assert test[0].mask.sum() == 0 and test[0].label == 0
    assert [t.name for t in load_mvtec_split(tmp_path, "train", shots=1)] == ["train/good/000"]
    # gt written as 0/255
    from PIL import Image
    assert set(np.unique(np.asarray(Image.open(tmp_path / "test/dent/gt/000.png")))) == {0, 255}


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        load_mvtec_split(tmp_path, "dev")
    with pytest.raises(ValueError, match="not an MVTec 3D-AD category folder"):
        load_mvtec_split(tmp_path, "train")
    rgb = np.zeros((4, 4, 3), np.uint8)
    write_mvtec_sample(tmp_path, "train", "good", 0, Sample(rgb=rgb, xyz=np.zeros((4, 4, 3), np.float32)))
    (tmp_path / "train/good/xyz/000.tiff").unlink()
    with pytest.raises(ValueError, match="missing file .*000.tiff"):
        load_mvtec_sample(tmp_path / "train/good/rgb/000.png", tmp_path / "train/good/xyz/000.tiff")
