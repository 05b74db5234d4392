"""cv_bridge and sensor_msgs_py where a ROS install has them: cross-checked against the package's
converters, and used for what only they read. Skipped without them (PyPI has neither)."""
from types import SimpleNamespace

import numpy as np
import pytest

from mentor3ad.io import msgconv
from mentor3ad.ros import bridges
from mentor3ad.ros.tooling.pair_publisher import build_pair, to_messages

needs_cv_bridge = pytest.mark.skipif(not bridges.HAVE_CV_BRIDGE, reason="cv_bridge not installed (no ROS install)")
needs_sensor_msgs_py = pytest.mark.skipif(not bridges.HAVE_SENSOR_MSGS_PY,
                                          reason="sensor_msgs_py not installed (no ROS install)")


@needs_cv_bridge
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_package_image_conversion_equals_cv_bridge(encoding):
    from cv_bridge import CvBridge

    rgb = np.random.default_rng(0).integers(0, 255, (12, 17, 3), dtype=np.uint8)
    msg = SimpleNamespace(**msgconv.rgb_to_image_fields(rgb, encoding))
    ours = msgconv.image_to_rgb(msg)
    theirs = CvBridge().imgmsg_to_cv2(to_messages({"image": msgconv.rgb_to_image_fields(rgb, encoding)}, 0)["image"],
                                      desired_encoding="rgb8")
    assert np.array_equal(ours, theirs)


@needs_cv_bridge
def test_encodings_only_cv_bridge_reads_are_normalized():
    from cv_bridge import CvBridge

    rgb = np.full((8, 10, 3), (200, 30, 90), np.uint8)
    rgb16 = CvBridge().cv2_to_imgmsg((rgb.astype(np.uint16) * 257), encoding="rgb16")
    out = bridges.normalize({"image": rgb16})["image"]
    assert out.encoding == "rgb8" and np.array_equal(msgconv.image_to_rgb(out), rgb)


@needs_sensor_msgs_py
def test_package_cloud_conversion_equals_sensor_msgs_py_and_float64_clouds_are_read():
    from sensor_msgs_py import point_cloud2
    from std_msgs.msg import Header

    cloud = to_messages(build_pair("good", 20, 16, "points", scene="plane"), 0)["points"]
    ours = msgconv.cloud_to_xyz(cloud)
    theirs = point_cloud2.read_points_numpy(cloud, field_names=("x", "y", "z"), skip_nans=False).reshape(16, 20, 3)
    assert np.array_equal(ours, theirs, equal_nan=True)
    wide = point_cloud2.create_cloud(Header(), [point_cloud2.PointField(name=n, offset=8 * i, datatype=8, count=1)
                                                for i, n in enumerate("xyz")], ours.reshape(-1, 3).astype(np.float64))
    wide.height, wide.width, wide.row_step = 16, 20, 20 * wide.point_step
    with pytest.raises(ValueError, match="FLOAT32"):
        msgconv.cloud_to_xyz(wide)
    assert np.allclose(msgconv.cloud_to_xyz(bridges.normalize({"points": wide})["points"]), ours, equal_nan=True)
