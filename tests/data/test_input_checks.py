"""InputMode.convert's plausibility rules: z <= 0 is invalid, the working volume, image/3D frame agreement."""
from types import SimpleNamespace as NS

import numpy as np
import pytest

from mentor3ad.errors import ConfigError, InputError
from mentor3ad.io.datasets.synthetic import camera_matrix, generate_sample
from mentor3ad.io.inputs import InputChecks, WorkingVolume, input_mode
from mentor3ad.io import msgconv

SIZE = (24, 32)


def _messages(mode, xyz=None, image_frame="camera_optical", other_frame="camera_optical"):
    """{key: message} of one synthetic part for ``mode``; the 3D messages carry ``other_frame``."""
    sample = generate_sample(5, SIZE)
    xyz = sample.xyz if xyz is None else xyz
    fields = {"image": msgconv.rgb_to_image_fields(sample.rgb)}
    fields.update(input_mode(mode).to_fields(xyz, camera_matrix(SIZE), "32FC1"))
    messages = {}
    for key, value in fields.items():
        value = dict(value)
        value.pop("frame_id", None)
        if "fields" in value:
            value["fields"] = [NS(name=n, offset=o, datatype=d, count=c) for n, o, d, c in value["fields"]]
        frame = image_frame if key == "image" else other_frame
        messages[key] = NS(header=NS(frame_id=frame, stamp=NS(sec=1, nanosec=0)), **value)
    return sample, messages


@pytest.mark.parametrize("mode", ["points", "depth"])
def test_plausible_part_passes_unchanged(mode):
    sample, messages = _messages(mode)
    rgb, xyz = input_mode(mode).convert(messages, min_valid_points=16)
    valid = msgconv.valid_point_mask(sample.xyz)
    assert np.array_equal(rgb, sample.rgb)
    assert np.allclose(xyz[valid], sample.xyz[valid], atol=2e-6) and np.isnan(xyz[~valid]).all()


def test_cloud_a_million_metres_away_is_refused_naming_the_volume():
    sample, _ = _messages("points")
    far = sample.xyz + np.array([0, 0, 1e6], np.float32)
    _, messages = _messages("points", far)
    with pytest.raises(InputError, match=r"^\d+ points outside the working volume x \[-10, 10\] m, y \[-10, 10\] m, "
                                         r"z \(0, 10\] m \(e\.g\. \[.*1e\+06\]\): 0 valid points remain of 768, "
                                         r"need at least 16$"):
        input_mode("points").convert(messages, min_valid_points=16)
    # the same cloud is fine with a volume that contains it
    volume = WorkingVolume.from_list([-10, 10, -10, 10, 0, 2e6])
    assert np.isfinite(input_mode("points").convert(messages, 16, InputChecks(volume=volume))[1]).any()


def test_stray_points_outside_the_volume_become_invalid():
    sample, _ = _messages("points")
    xyz = sample.xyz.copy()
    xyz[0, :5] = (0.0, 0.0, 50.0)  # five returns 50 m away
    xyz[1, :3] = (20.0, 0.0, 0.5)  # three 20 m to the side
    _, messages = _messages("points", xyz)
    _, out = input_mode("points").convert(messages, min_valid_points=16)
    assert np.isnan(out[0, :5]).all() and np.isnan(out[1, :3]).all()
    inside = msgconv.valid_point_mask(sample.xyz)
    inside[0, :5] = inside[1, :3] = False
    assert np.allclose(out[inside], sample.xyz[inside], atol=2e-6)
    _, kept = input_mode("points").convert(messages, 16, InputChecks(volume=None))  # no volume: all kept
    assert np.allclose(kept[0, :5], (0.0, 0.0, 50.0))


@pytest.mark.parametrize("mode", ["points", "depth"])
def test_points_behind_the_camera_are_invalid_in_both_modes_and_without_volume(mode):
    sample, messages = _messages(mode)
    if mode == "points":
        _, messages = _messages(mode, sample.xyz * np.array([1, 1, -1], np.float32))  # behind the camera
    else:  # a negative 32FC1 depth (to_fields writes only z > 0: negate it by hand)
        depth = np.frombuffer(messages["depth"].data, "<f4").copy()
        messages["depth"].data = np.where(np.isnan(depth), depth, -np.abs(depth)).astype("<f4").tobytes()
    for checks in (None, InputChecks(volume=None)):
        with pytest.raises(InputError, match=r"^\d+ points behind the camera \(z <= 0\): 0 valid points remain"):
            input_mode(mode).convert(messages, 16, checks)


def test_too_few_points_without_anything_dropped_keeps_its_message():
    sample, _ = _messages("points")
    _, messages = _messages("points", np.zeros_like(sample.xyz))
    with pytest.raises(InputError, match="too few valid points in the point cloud: 0 of 768"):
        input_mode("points").convert(messages, min_valid_points=1)


def test_working_volume_validation():
    with pytest.raises(ConfigError, match="min < max"):
        WorkingVolume(x_min=1.0, x_max=-1.0)
    with pytest.raises(ConfigError, match="z_min must be >= 0"):
        WorkingVolume(z_min=-1.0)
    with pytest.raises(ConfigError, match="finite"):
        WorkingVolume(z_max=float("inf"))
    with pytest.raises(ConfigError, match="needs 6 values"):
        WorkingVolume.from_list([0, 1])
    assert WorkingVolume.from_list([-1, 1, -2, 2, 0.1, 3]).describe() == "x [-1, 1] m, y [-2, 2] m, z (0.1, 3] m"


@pytest.mark.parametrize("mode, what", [("points", "cloud"), ("depth", "depth")])
def test_frame_mismatch_is_refused_unless_allowed(mode, what):
    _, messages = _messages(mode, image_frame="camera_color_optical_frame", other_frame="camera_depth_optical_frame")
    with pytest.raises(InputError, match=f"^image frame 'camera_color_optical_frame' differs from {what} frame "
                                         f"'camera_depth_optical_frame'"):
        input_mode(mode).convert(messages, 16)
    rgb, xyz = input_mode(mode).convert(messages, 16, InputChecks(require_same_frame=False))
    assert rgb.shape[:2] == xyz.shape[:2] == SIZE


def test_empty_frames_are_not_compared():
    for image_frame, other_frame in (("", "camera"), ("camera", "")):
        _, messages = _messages("points", image_frame=image_frame, other_frame=other_frame)
        assert input_mode("points").convert(messages, 16)[1].shape == SIZE + (3,)
    _, messages = _messages("points")
    for message in messages.values():  # messages without a header at all (plain objects)
        del message.header
    assert input_mode("points").convert(messages, 16)[1].shape == SIZE + (3,)


def test_depth_mode_compares_the_camera_info_frame_too():
    _, messages = _messages("depth", image_frame="camera_color_optical_frame",
                            other_frame="camera_color_optical_frame")
    messages["camera_info"].header.frame_id = "camera_depth_optical_frame"
    with pytest.raises(InputError, match="^image frame 'camera_color_optical_frame' differs from camera info frame "
                                         "'camera_depth_optical_frame'"):
        input_mode("depth").convert(messages, 16)
    assert input_mode("depth").convert(messages, 16, InputChecks(require_same_frame=False))[1].shape == SIZE + (3,)
