"""Synthetic inspection cell: determinism, geometry, defect families, layout, naive baseline difficulty."""
import json
import time

import numpy as np
import pytest

from mentor3ad.eval.baselines import NaiveBaseline
from mentor3ad.io.datasets import synthetic_render
from mentor3ad.io.datasets.mvtec import load_mvtec_split
from mentor3ad.io.datasets.synthetic import (DEFECT_TYPES, camera_matrix, generate_cell_dataset, generate_sample,
                                             load_camera_matrix)
from mentor3ad.eval.metrics import compute_metrics


def test_deterministic_and_well_formed():
    a = generate_sample(7, (48, 64), "dent")
    b = generate_sample(7, (48, 64), "dent")
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.xyz, b.xyz) and np.array_equal(a.mask, b.mask)
    assert a.rgb.shape == (48, 64, 3) and a.rgb.dtype == np.uint8
    assert a.xyz.shape == (48, 64, 3) and a.xyz.dtype == np.float32
    assert a.label == 1 and a.defect == "dent" and a.mask.sum() > 0
    c = generate_sample(8, (48, 64), "dent")
    assert not np.array_equal(a.rgb, c.rgb)
    g = generate_sample(1, (48, 64))
    assert g.label == 0 and g.mask.sum() == 0 and g.defect == "good"


def test_points_lie_on_their_pixel_rays_and_invalid_points_are_zero():
    res = (60, 80)
    s = generate_sample(3, res)
    K = camera_matrix(res)
    valid = s.xyz[..., 2] > 0
    assert 0.85 < valid.mean() < 1.0  # some invalid pixels, most valid
    assert (s.xyz[~valid] == 0).all()
    v, u = np.nonzero(valid)
    p = s.xyz[valid].astype(np.float64)
    assert np.allclose(K[0, 0] * p[:, 0] / p[:, 2] + K[0, 2], u, atol=1e-3)
    assert np.allclose(K[1, 1] * p[:, 1] / p[:, 2] + K[1, 2], v, atol=1e-3)
    assert 0.3 < np.median(p[:, 2]) < 0.4  # camera ~0.35 m above the part


def test_defect_families_change_only_their_modality():
    rng = np.random.default_rng(0)
    config = synthetic_render.CellConfig()
    x, y = np.meshgrid(np.linspace(-0.05, 0.05, 200), np.linspace(-0.04, 0.04, 160))
    for kind in DEFECT_TYPES:
        d = synthetic_render.random_defect(kind, rng, config)
        dh = np.abs(d.height(x, y)).max()
        colour = d.albedo_weight(x, y).max()
        assert d.footprint(x, y).any()
        if kind in synthetic_render.GEOMETRY_DEFECTS:
            assert colour == 0 and 0.0002 < dh < 0.002  # sub-mm to mm deep, no colour change
        elif kind in synthetic_render.APPEARANCE_DEFECTS:
            assert dh == 0 and colour > 0.5
        else:
            assert dh > 0.0002 and colour > 0.5
    with pytest.raises(ValueError, match="unknown defect type 'crack'"):
        generate_sample(0, (32, 32), "crack")


def test_dataset_layout_and_speed(tmp_path):
    start = time.perf_counter()
    info = generate_cell_dataset(tmp_path, n_train=3, n_val=1, n_test_good=2, n_test_per_defect=1, resolution=(40, 48))
    assert time.perf_counter() - start < 10
    assert info["counts"]["test/scratch"] == 1 and info["defect_families"]["paint"] == "appearance"
    assert json.loads((tmp_path / "dataset.json").read_text())["resolution"] == [40, 48]
    K = load_camera_matrix(tmp_path)
    assert np.allclose(K, camera_matrix((40, 48)))
    test = load_mvtec_split(tmp_path, "test")
    assert len(test) == 2 + len(DEFECT_TYPES)
    assert all(t.mask.sum() > 0 for t in test if t.label == 1)
    assert len(load_mvtec_split(tmp_path, "train")) == 3 and len(load_mvtec_split(tmp_path, "validation")) == 1
    # the same seed writes the same files
    again = tmp_path / "again"
    generate_cell_dataset(again, n_train=3, n_val=1, n_test_good=2, n_test_per_defect=1, resolution=(40, 48))
    assert (again / "test/dent/rgb/000.png").read_bytes() == (tmp_path / "test/dent/rgb/000.png").read_bytes()


def test_naive_baseline_is_imperfect_on_the_cell():
    res = (64, 64)
    train = [generate_sample(np.random.default_rng([1, i]), res) for i in range(8)]
    test = [generate_sample(np.random.default_rng([2, i]), res) for i in range(6)]
    test += [generate_sample(np.random.default_rng([3, i]), res, d) for i, d in enumerate(DEFECT_TYPES * 2)]
    naive = NaiveBaseline().fit(train)
    preds = naive.predict_samples(test)
    assert preds[0].anomaly_map.shape == res and preds[0].threshold == naive.threshold
    m = compute_metrics([p.score for p in preds], [s.label for s in test], [p.anomaly_map for p in preds],
                        [s.mask for s in test])
    assert m["i_auroc"] < 0.9 and m["aupro_30"] < 0.5
    with pytest.raises(ValueError, match="fitted on"):
        naive.predict(generate_sample(0, (32, 32)))


def test_make_data_cli(tmp_path, capsys):
    from mentor3ad.cli import main

    rc = main(["make-data", "--out", str(tmp_path / "cell"), "--n-train", "2", "--n-val", "1", "--n-test-good", "1",
               "--n-test-per-defect", "1", "--resolution", "32", "40", "--defects", "dent", "paint"])
    assert rc == 0 and "wrote 6 samples" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "cell/test").iterdir()) == ["dent", "good", "paint"]
