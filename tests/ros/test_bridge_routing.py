"""Which images go to cv_bridge (where it is installed): only encodings the package's converter does not
read and that can be a colour camera's; depth-like single-channel encodings keep the package's error."""
import pytest

from mentor3ad.ros.bridges import _for_cv_bridge


@pytest.mark.parametrize("encoding", ["rgb16", "bayer_rggb8", "yuv422", "8UC3", "bgra16"])
def test_colour_encodings_the_package_does_not_read_go_to_cv_bridge(encoding):
    assert _for_cv_bridge(encoding)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "32FC1", "16UC1", "64FC1", "8SC1"])
def test_readable_or_depth_like_encodings_do_not(encoding):
    assert not _for_cv_bridge(encoding)
