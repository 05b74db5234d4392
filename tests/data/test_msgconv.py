"""msgconv: Image / PointCloud2 / depth+CameraInfo <-> numpy, duck-typed (plain objects, rclpy, rosbags)."""
from types import SimpleNamespace as NS

import numpy as np
import pytest

from mentor3ad.geometry.observation import check_observation
from mentor3ad.io import depth as depth_io
from mentor3ad.io import msgconv
from mentor3ad.errors import InputError as MessageConversionError


def _rgb(h=5, w=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _field_objs(fields):
    return [NS(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields]


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_image_round_trip_all_colour_encodings(encoding):
    rgb = _rgb()
    msg = NS(**msgconv.rgb_to_image_fields(rgb, encoding))
    assert np.array_equal(msgconv.image_to_rgb(msg), rgb)


def test_image_bgr_channel_order_and_row_padding():
    # 2x2 bgr8 with 3 padding bytes per row
    rows = [bytes([1, 2, 3, 4, 5, 6, 0, 0, 0]), bytes([7, 8, 9, 10, 11, 12, 0, 0, 0])]
    msg = NS(height=2, width=2, encoding="bgr8", is_bigendian=0, step=9, data=b"".join(rows))
    rgb = msgconv.image_to_rgb(msg)
    assert rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [3, 2, 1] and rgb[1, 1].tolist() == [12, 11, 10]


def test_mono8_and_mono16():
    mono = np.arange(12, dtype=np.uint8).reshape(3, 4)
    msg = NS(height=3, width=4, encoding="mono8", is_bigendian=0, step=4, data=mono.tobytes())
    out = msgconv.image_to_rgb(msg)
    assert out.shape == (3, 4, 3) and np.array_equal(out[..., 1], mono)
    m16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 4000)
    msg16 = NS(height=3, width=4, encoding="mono16", is_bigendian=1, step=8, data=m16.astype(">u2").tobytes())
    assert np.array_equal(msgconv.image_to_rgb(msg16)[..., 0], (m16 >> 8).astype(np.uint8))


def test_image_errors_name_the_problem():
    rgb = _rgb()
    fields = msgconv.rgb_to_image_fields(rgb)
    with pytest.raises(MessageConversionError, match="unsupported image encoding 'yuv422'.*rgb8"):
        msgconv.image_to_rgb(NS(**{**fields, "encoding": "yuv422"}))
    with pytest.raises(MessageConversionError, match="truncated"):
        msgconv.image_to_rgb(NS(**{**fields, "data": fields["data"][:-5]}))
    with pytest.raises(MessageConversionError, match="height\\*step"):
        msgconv.image_to_rgb(NS(**{**fields, "data": fields["data"] + b"\0"}))
    with pytest.raises(MessageConversionError, match="step"):
        msgconv.image_to_rgb(NS(**{**fields, "step": 3}))


def test_cloud_round_trip_with_nan_and_padding():
    xyz = np.random.default_rng(1).normal(size=(4, 6, 3)).astype(np.float32)
    xyz[1, 2] = np.nan
    for padded in (False, True):
        f = msgconv.xyz_to_cloud_fields(xyz, padded=padded)
        assert f["point_step"] == (16 if padded else 12) and f["is_dense"] is False
        msg = NS(**{**f, "fields": _field_objs(f["fields"])})
        out = msgconv.cloud_to_xyz(msg)
        assert np.array_equal(np.isnan(out), np.isnan(xyz))
        assert np.allclose(out[~np.isnan(out)], xyz[~np.isnan(xyz)])


def test_cloud_custom_offsets_row_padding_big_endian():
    h, w = 3, 4
    xyz = np.random.default_rng(2).normal(size=(h, w, 3)).astype(np.float32)
    point_step, row_step = 32, w * 32 + 8  # rgb float at 0, z at 8, x at 16, y at 24, 8 bytes row pad
    buf = np.zeros((h, row_step), np.uint8)
    for v in range(h):
        for u in range(w):
            base = u * point_step
            for name, off, c in (("z", 8, 2), ("x", 16, 0), ("y", 24, 1)):
                buf[v, base + off: base + off + 4] = np.frombuffer(np.array([xyz[v, u, c]], ">f4").tobytes(), np.uint8)
    fields = _field_objs([("rgb", 0, 7, 1), ("z", 8, 7, 1), ("x", 16, 7, 1), ("y", 24, 7, 1)])
    msg = NS(height=h, width=w, fields=fields, is_bigendian=True, point_step=point_step, row_step=row_step,
             data=buf.tobytes(), is_dense=True)
    assert np.array_equal(msgconv.cloud_to_xyz(msg), xyz)


def test_cloud_unaligned_fields_take_the_byte_path():
    """Fields at offsets that are not multiples of 4 (a packed custom layout) decode like aligned ones."""
    h, w = 3, 5
    xyz = np.random.default_rng(4).normal(size=(h, w, 3)).astype(np.float32)
    point_step = 13  # intensity byte at 0, x at 1, y at 5, z at 9
    buf = np.zeros((h, w, point_step), np.uint8)
    for c, off in enumerate((1, 5, 9)):
        buf[:, :, off:off + 4] = np.ascontiguousarray(xyz[..., c]).astype("<f4").view(np.uint8).reshape(h, w, 4)
    fields = _field_objs([("intensity", 0, 2, 1), ("x", 1, 7, 1), ("y", 5, 7, 1), ("z", 9, 7, 1)])
    msg = NS(height=h, width=w, fields=fields, is_bigendian=False, point_step=point_step, row_step=w * point_step,
             data=buf.tobytes(), is_dense=True)
    out = msgconv.cloud_to_xyz(msg)
    assert np.array_equal(out, xyz) and out.flags["C_CONTIGUOUS"]


def test_cloud_errors_name_the_problem():
    xyz = np.ones((3, 4, 3), np.float32)
    f = msgconv.xyz_to_cloud_fields(xyz)
    good = {**f, "fields": _field_objs(f["fields"])}
    with pytest.raises(MessageConversionError, match="unorganized"):
        msgconv.cloud_to_xyz(NS(**{**good, "height": 1, "width": 12, "row_step": 144}))
    with pytest.raises(MessageConversionError, match="missing field.*z"):
        msgconv.cloud_to_xyz(NS(**{**good, "fields": _field_objs(f["fields"][:2])}))
    with pytest.raises(MessageConversionError, match="'y' has datatype FLOAT64"):
        msgconv.cloud_to_xyz(NS(**{**good, "fields": _field_objs([("x", 0, 7, 1), ("y", 4, 8, 1), ("z", 8, 7, 1)])}))
    with pytest.raises(MessageConversionError, match="truncated"):
        msgconv.cloud_to_xyz(NS(**{**good, "data": f["data"][:50]}))


def _camera_info(fx=500.0, fy=520.0, cx=3.2, cy=2.1, w=8, h=6, use_p=True):
    fields = depth_io.camera_info_fields([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], w, h)
    if not use_p:
        fields["p"] = [0.0] * 12
    return NS(**fields)


def test_depth_back_projection_matches_depth_image_proc_formula():
    h, w = 6, 8
    info = _camera_info()
    rng = np.random.default_rng(3)
    mm = rng.integers(300, 900, (h, w)).astype(np.uint16)
    mm[0, 0] = 0
    msg = NS(height=h, width=w, encoding="16UC1", is_bigendian=0, step=w * 2, data=mm.tobytes())
    xyz = depth_io.depth_to_xyz(msg, info)
    assert np.isnan(xyz[0, 0]).all()
    v, u = 3, 5
    d = float(mm[v, u])
    assert xyz[v, u, 2] == pytest.approx(d * 0.001, rel=1e-6)
    assert xyz[v, u, 0] == pytest.approx((u - 3.2) * d * 0.001 / 500.0, rel=1e-5)
    assert xyz[v, u, 1] == pytest.approx((v - 2.1) * d * 0.001 / 520.0, rel=1e-5)
    # K is used when P is all zero
    assert np.allclose(depth_io.depth_to_xyz(msg, _camera_info(use_p=False)), xyz, equal_nan=True)


def test_depth_float_round_trip_and_invalids():
    h, w = 6, 8
    info = _camera_info()
    fx, fy, cx, cy = depth_io.intrinsics_from_camera_info(info)
    z = np.full((h, w), 0.5, np.float32)
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    xyz = np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], -1).astype(np.float32)
    xyz[2, 3] = np.nan
    for enc in ("32FC1", "16UC1"):
        msg = NS(**depth_io.xyz_to_depth_fields(xyz, enc))
        back = depth_io.depth_to_xyz(msg, info)
        assert np.isnan(back[2, 3]).all()
        ok = ~np.isnan(xyz[..., 0])
        assert np.allclose(back[ok], xyz[ok], atol=1e-6)
    inf = np.array([[np.inf, 1.0], [np.nan, 2.0]], "<f4")
    msg = NS(height=2, width=2, encoding="32FC1", is_bigendian=0, step=8, data=inf.tobytes())
    out = depth_io.depth_to_xyz(msg, _camera_info(w=2, h=2))
    assert np.isnan(out[0, 0]).all() and np.isnan(out[1, 0]).all() and out[1, 1, 2] == 2.0


def test_depth_errors():
    info = _camera_info()
    msg = NS(**depth_io.xyz_to_depth_fields(np.ones((6, 8, 3), np.float32)))
    zero = NS(**{**vars(info), "k": [0.0] * 9, "p": [0.0] * 12})
    with pytest.raises(MessageConversionError, match="zero or invalid intrinsics"):
        depth_io.depth_to_xyz(msg, zero)
    with pytest.raises(MessageConversionError, match="unsupported depth encoding 'mono8'"):
        depth_io.depth_to_xyz(NS(**{**vars(msg), "encoding": "mono8"}), info)
    with pytest.raises(MessageConversionError, match="does not match camera_info size"):
        depth_io.depth_to_xyz(msg, _camera_info(w=4, h=3))


def test_checks():
    with pytest.raises(MessageConversionError, match="does not match point cloud size"):
        check_observation(np.zeros((4, 5, 3), np.uint8), np.zeros((4, 6, 3), np.float32))
    xyz = np.zeros((4, 5, 3), np.float32)
    xyz[0, :3] = 1.0
    with pytest.raises(MessageConversionError, match="too few valid points.*3 of 20"):
        msgconv.check_enough_valid_points(xyz, min_points=4)
    assert msgconv.check_enough_valid_points(xyz, min_points=3) == 3


def test_real_rclpy_messages():
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    rgb = _rgb(4, 6)
    img = sensor_msgs.Image(**msgconv.rgb_to_image_fields(rgb, "bgra8"))
    assert np.array_equal(msgconv.image_to_rgb(img), rgb)
    xyz = np.random.default_rng(4).normal(size=(4, 6, 3)).astype(np.float32)
    f = msgconv.xyz_to_cloud_fields(xyz, padded=True)
    f["fields"] = [sensor_msgs.PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in f["fields"]]
    cloud = sensor_msgs.PointCloud2(**f)
    assert np.array_equal(msgconv.cloud_to_xyz(cloud), xyz)
    info_fields = depth_io.camera_info_fields([[400, 0, 3], [0, 400, 2], [0, 0, 1]], 6, 4)
    info_fields.pop("frame_id")
    info = sensor_msgs.CameraInfo(**info_fields)
    depth = sensor_msgs.Image(**depth_io.xyz_to_depth_fields(np.abs(xyz) + 0.1, "16UC1"))
    out = depth_io.depth_to_xyz(depth, info)
    assert out.shape == (4, 6, 3) and np.isfinite(out).all()


def test_binning_and_roi_adjust_intrinsics_like_image_geometry():
    info = _camera_info(fx=400.0, fy=400.0, cx=40.0, cy=30.0, w=80, h=60)
    info.binning_x = info.binning_y = 2
    assert depth_io.intrinsics_from_camera_info(info) == (200.0, 200.0, 20.0, 15.0)
    info.binning_x = info.binning_y = 0
    info.roi = NS(x_offset=10, y_offset=4, width=20, height=16, do_rectify=False)
    assert depth_io.intrinsics_from_camera_info(info) == (400.0, 400.0, 30.0, 26.0)
    depth = NS(**depth_io.xyz_to_depth_fields(np.ones((16, 20, 3), np.float32)))
    assert depth_io.depth_to_xyz(depth, info).shape == (16, 20, 3)  # ROI size is the image size


# ------------------------------------------------------------------ malformed PointCloud2 layouts
def _real_cloud(bigendian=False, size=(24, 32)):
    """Fields of an organized cloud of a synthetic part (metres, NaN = invalid), in either byte order."""
    from mentor3ad.io.datasets.synthetic import generate_sample

    xyz = generate_sample(3, size).xyz
    xyz = np.where((xyz == 0).all(-1, keepdims=True), np.float32(np.nan), xyz).astype(np.float32)
    fields = msgconv.xyz_to_cloud_fields(xyz, padded=True)
    if bigendian:
        fields["data"] = np.frombuffer(fields["data"], "<f4").astype(">f4").tobytes()
        fields["is_bigendian"] = True
    return xyz, {**fields, "fields": _field_objs(fields["fields"])}


def test_cloud_field_layout_errors_name_the_problem():
    _, good = _real_cloud()
    cases = [
        ([("x", 0, 7, 1), ("y", 2, 7, 1), ("z", 8, 7, 1)], r"fields 'x' \(offset 0\) and 'y' \(offset 2\) overlap"),
        ([("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 4, 7, 1)], r"fields 'y' \(offset 4\) and 'z' \(offset 4\) overlap"),
        ([("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("x", 12, 7, 1)], r"field 'x' twice \(offsets 0 and 12\)"),
        ([("x", 0, 7, 1), ("y", 4, 7, 2), ("z", 12, 7, 1)], r"field 'y' has count 2, expected 1"),
        ([("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 0)], r"field 'z' has count 0, expected 1"),
        ([("x", -4, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)], r"field 'x' has a negative offset -4"),
    ]
    for fields, reason in cases:
        with pytest.raises(MessageConversionError, match=reason):
            msgconv.cloud_to_xyz(NS(**{**good, "fields": _field_objs(fields)}))
    # padding fields may repeat (PCL names them "_"); unrelated duplicates do not matter
    extra = _field_objs([("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("_", 12, 7, 1), ("_", 13, 2, 1)])
    assert msgconv.cloud_to_xyz(NS(**{**good, "fields": extra})).shape == (24, 32, 3)


@pytest.mark.parametrize("bigendian", [False, True])
def test_correctly_labelled_byte_orders_read(bigendian):
    xyz, fields = _real_cloud(bigendian)
    assert np.array_equal(msgconv.cloud_to_xyz(NS(**fields)), xyz, equal_nan=True)


@pytest.mark.parametrize("bigendian", [False, True])
def test_wrong_is_bigendian_flag_is_detected(bigendian):
    _, fields = _real_cloud(bigendian)
    mislabelled = NS(**{**fields, "is_bigendian": not bigendian})
    with pytest.raises(MessageConversionError, match=rf"is_bigendian looks wrong: decoded as is_bigendian="
                                                     rf"{not bigendian} only \d+% of \d+ points are plausible metres"):
        msgconv.cloud_to_xyz(mislabelled)


def test_wrong_flag_on_a_mostly_invalid_cloud_is_detected():
    xyz, fields = _real_cloud()
    data = np.frombuffer(fields["data"], "<f4").reshape(24, 32, 4).copy()
    data[:, 4:] = np.nan  # a few valid columns; NaN markers decode to denormals in the wrong byte order
    mislabelled = NS(**{**fields, "data": data.tobytes(), "is_bigendian": True})
    with pytest.raises(MessageConversionError, match="is_bigendian looks wrong"):
        msgconv.cloud_to_xyz(mislabelled)


def test_noise_is_not_taken_for_a_byte_order_problem():
    # random bytes are implausible in both orders: returned as they are (the working volume refuses them)
    _, fields = _real_cloud()
    noise = np.random.default_rng(0).integers(0, 256, len(fields["data"]), dtype=np.uint8).tobytes()
    out = msgconv.cloud_to_xyz(NS(**{**fields, "data": noise}))
    assert out.shape == (24, 32, 3) and not (np.isfinite(out) & (np.abs(out) < 1e5)).all()
    # a correctly labelled cloud with a few absurd points is still read
    xyz, fields = _real_cloud()
    data = np.frombuffer(fields["data"], "<f4").reshape(24, 32, 4).copy()
    data[:5, :, :3] = 3e30
    assert np.isfinite(msgconv.cloud_to_xyz(NS(**{**fields, "data": data.tobytes()}))).any()
