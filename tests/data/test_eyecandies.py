"""Eyecandies raw layout -> MVTec 3D-AD layout, on a tiny sample written here in that format."""
import numpy as np
import pytest
import yaml
from PIL import Image

from mentor3ad.io.datasets.eyecandies import EYECANDIES_FOCAL_LENGTH, convert_eyecandies, load_eyecandies_sample
from mentor3ad.io.datasets.mvtec import load_mvtec_split

H, W = 6, 8
LO, HI = 0.5, 1.0


def _pose():
    a = np.deg2rad(30)
    pose = np.eye(4)
    pose[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    pose[:3, 3] = [0.1, -0.2, 0.7]
    return pose


def _write_raw(data_dir, sample_id, seed, defect=False, with_mask=True):
    rng = np.random.default_rng(seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(data_dir / f"{sample_id}_image_4.png")
    raw = rng.integers(1000, 60000, (H, W)).astype(np.uint16)
    raw[0, :] = 65535  # background (far plane / no surface)
    raw[1, 0] = 0
    Image.fromarray(raw).save(data_dir / f"{sample_id}_depth.png")
    (data_dir / f"{sample_id}_info_depth.yaml").write_text(yaml.safe_dump({"normalization": {"min": LO, "max": HI}}))
    np.savetxt(data_dir / f"{sample_id}_pose.txt", _pose())
    if with_mask:
        mask = np.zeros((H, W), np.uint8)
        if defect:
            mask[3:5, 4:6] = 255
        Image.fromarray(mask).save(data_dir / f"{sample_id}_mask.png")
    return raw


def test_conversion_geometry_background_and_splits(tmp_path):
    src = tmp_path / "Candy"
    raw = _write_raw(src / "train/data", "000", 0, with_mask=False)
    _write_raw(src / "train/data", "001", 1, with_mask=False)
    _write_raw(src / "val/data", "000", 2, with_mask=False)
    _write_raw(src / "test_public/data", "000", 3, defect=False)
    _write_raw(src / "test_public/data", "001", 4, defect=True)
    dst = tmp_path / "out" / "Candy"
    counts = convert_eyecandies(src, dst)
    assert counts == {"train/good": 2, "validation/good": 1, "test/good": 1, "test/bad": 1}
    # everything written below dst, nothing elsewhere
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"Candy"}
    train = load_mvtec_split(dst, "train")
    xyz = train[0].xyz
    # background all-zero (the public converter left the camera centre's world position there)
    assert (xyz[0] == 0).all() and (xyz[1, 0] == 0).all()
    # one valid pixel by hand: depth, back-projection, inverse pose
    v, u = 3, 5
    d = LO + raw[v, u] / 65535 * (HI - LO)
    cam = np.array([(u - W / 2) / EYECANDIES_FOCAL_LENGTH * d, (v - H / 2) / EYECANDIES_FOCAL_LENGTH * d, d, 1.0])
    world = np.linalg.inv(_pose()) @ cam
    assert np.allclose(xyz[v, u], world[:3], atol=1e-6)
    test = load_mvtec_split(dst, "test")
    assert [t.defect for t in test] == ["good", "bad"] and test[1].mask.sum() == 4
    cam_sample = load_eyecandies_sample(src / "train/data", "000", frame="camera")
    assert np.allclose(cam_sample.xyz[v, u], cam[:3], atol=1e-6)


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="not an Eyecandies category folder"):
        convert_eyecandies(tmp_path, tmp_path / "dst")
    _write_raw(tmp_path / "c/test_public/data", "000", 0, with_mask=False)
    with pytest.raises(ValueError, match="has no 000_mask.png"):
        convert_eyecandies(tmp_path / "c", tmp_path / "dst")
    (tmp_path / "c/test_public/data/000_info_depth.yaml").write_text("foo: 1\n")
    with pytest.raises(ValueError, match="normalization"):
        load_eyecandies_sample(tmp_path / "c/test_public/data", "000")


def test_cli(tmp_path, capsys):
    from mentor3ad.cli import main

    _write_raw(tmp_path / "c/train/data", "000", 0, with_mask=False)
    assert main(["convert-eyecandies", str(tmp_path / "c"), str(tmp_path / "d"), "--frame", "camera"]) == 0
    assert "converted 1 samples" in capsys.readouterr().out
    assert (tmp_path / "d/train/good/xyz/000.tiff").is_file()


def test_support_plane_removal_keeps_the_object():
    from mentor3ad.io.datasets.eyecandies import depth_to_points

    h, w = 40, 50
    v, u = np.mgrid[0:h, 0:w]
    depth = 0.6 + 0.001 * u  # tilted support plane
    blob = (u - 25) ** 2 + (v - 20) ** 2 < 8 ** 2
    depth = np.where(blob, depth - 0.02, depth)  # candy 2 cm above it
    depth[0, 0] = np.nan
    xyz = depth_to_points(depth, None, 100.0, frame="camera", plane_distance_m=0.003)
    kept = np.abs(xyz).sum(-1) > 0
    assert np.array_equal(kept, blob)
    assert (xyz[~kept] == 0).all()
