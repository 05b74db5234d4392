"""Depth in 1 mm steps against a model trained on float depth (issue 23): ERROR where the steps exceed the spacing
of the points (they become the surface's shape), WARN where the points are spaced further apart, nothing for
finer steps. Real synthetic-cell observations, quantised along the viewing rays as a 16UC1 image would be."""
import numpy as np
import pytest

from mentor3ad.geometry.observation import pixel_pitch_m, valid_point_mask
from mentor3ad.io.datasets.synthetic import generate_sample
from mentor3ad.model.input_profile import SEVERITY, InputProfile


def quantised(sample, step_m):
    """The sample's points with z rounded to ``step_m``, x and y moved along each pixel's ray."""
    xyz = sample.xyz.astype(np.float64)
    z = xyz[..., 2]
    ok = np.isfinite(z) & (z > 0)
    scale = np.where(ok, np.round(np.where(ok, z, 1.0) / step_m) * step_m / np.where(ok, z, 1.0), 1.0)
    return (xyz * scale[..., None]).astype(np.float32)


@pytest.mark.parametrize("side, kind", [(224, "depth_steps"), (64, "depth_quantisation")])
def test_millimetre_steps_are_an_error_only_where_points_are_closer_than_a_millimetre(side, kind):
    train = [generate_sample(seed, (side, side)) for seed in range(3)]
    profile = InputProfile.of(train)
    part = generate_sample(10, (side, side))
    pitch = pixel_pitch_m(part.xyz, valid_point_mask(part.xyz))
    assert (pitch < 0.001) == (kind == "depth_steps")  # 224: ~0.58 mm apart, 64: ~2 mm
    assert profile.check(part.rgb, part.xyz) == []
    found = profile.check(part.rgb, quantised(part, 0.001))
    assert [(m.kind, m.severity) for m in found] == [(kind, SEVERITY[kind])]
    assert "depth quantised to 1 mm" in found[0].message
    if kind == "depth_steps":
        assert found[0].severity == "ERROR" and "mm apart" in found[0].message and "0.1 mm" in found[0].message


def test_tenth_of_a_millimetre_steps_pass_without_a_word():
    profile = InputProfile.of([generate_sample(seed, (224, 224)) for seed in range(3)])
    part = generate_sample(11, (224, 224))
    assert profile.check(part.rgb, quantised(part, 0.0001)) == []
