"""rosbag2 (sqlite3 and mcap) dataset bags: round trip, depth mode, pairing, errors."""

import numpy as np
import pytest

from mentor3ad.errors import BagError
from mentor3ad.io.bags import bag_topics, read_bag_samples, write_dataset_bag
from mentor3ad.io.datasets.synthetic import camera_matrix, generate_sample

RES = (24, 32)


def _samples():
    out = []
    for i, defect in enumerate(["good", "dent", "paint"]):
        s = generate_sample(i, RES, defect, name=f"test/{defect}/{i:03d}")
        out.append(s)
    unlabelled = generate_sample(9, RES)
    unlabelled.mask, unlabelled.label, unlabelled.name = None, None, "live/0"
    return out + [unlabelled]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_points_round_trip(tmp_path, storage):
    samples = _samples()
    bag = write_dataset_bag(samples, tmp_path / "bag", storage=storage, start_stamp_ns=5_000_000_000, period_ns=10**8)
    topics = bag_topics(bag)
    assert topics["/camera/points"] == "sensor_msgs/msg/PointCloud2" and "/camera/gt_mask" in topics
    back = list(read_bag_samples(bag))
    assert [s.stamp_ns for s in back] == [5_000_000_000 + i * 10**8 for i in range(4)]
    for src, got in zip(samples, back):
        assert np.array_equal(got.rgb, src.rgb)
        valid = src.xyz[..., 2] > 0
        assert np.array_equal(got.xyz[valid], src.xyz[valid]) and np.isnan(got.xyz[~valid]).all()
        assert got.name == src.name
    assert [s.label for s in back] == [0, 1, 1, None]
    assert np.array_equal(back[1].mask, samples[1].mask) and back[3].mask is None
    assert back[1].defect == "dent"


def test_depth_mode_matches_points(tmp_path):
    samples = _samples()[:2]
    K = camera_matrix(RES)
    bag = write_dataset_bag(samples, tmp_path / "d", input_mode="depth", camera_info=K, storage="mcap")
    assert "/camera/points" not in bag_topics(bag)
    back = list(read_bag_samples([bag], input_mode="depth"))
    assert len(back) == 2
    for src, got in zip(samples, back):
        valid = src.xyz[..., 2] > 0
        assert np.allclose(got.xyz[valid], src.xyz[valid], atol=2e-6)
        assert np.isnan(got.xyz[~valid]).all()
    mm = write_dataset_bag(samples, tmp_path / "mm", input_mode="depth", camera_info=K, depth_encoding="16UC1")
    got = next(read_bag_samples(mm, input_mode="depth"))
    valid = samples[0].xyz[..., 2] > 0
    assert np.abs(got.xyz[valid] - samples[0].xyz[valid]).max() < 0.0006  # mm quantisation


def test_pairing_respects_slop_and_custom_topics(tmp_path):
    topics = {"image": "/cell/rgb", "points": "/cell/cloud", "mask": "/cell/mask"}
    bag = write_dataset_bag(_samples()[:2], tmp_path / "b", topics=topics)
    assert len(list(read_bag_samples(bag, topics=topics, slop_ns=0))) == 2
    with pytest.raises(BagError, match=r"no topic\(s\) /camera/image, /camera/points.*it has: .*/cell/cloud"):
        list(read_bag_samples(bag))
    with pytest.raises(BagError, match="/camera/depth"):
        list(read_bag_samples(bag, topics=topics, input_mode="depth"))


def test_broken_bags_give_clear_errors(tmp_path):
    with pytest.raises(BagError, match="cannot open bag"):
        bag_topics(tmp_path / "missing")
    bag = write_dataset_bag(_samples()[:2], tmp_path / "s")
    db = next(bag.glob("*.db3"))
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3])
    with pytest.raises(BagError, match="cannot (open|read) bag|bag .* is damaged"):
        list(read_bag_samples(bag))
    with pytest.raises(BagError, match="already exists"):
        write_dataset_bag(_samples()[:1], bag)
    with pytest.raises(BagError, match="needs the camera intrinsics"):
        write_dataset_bag(_samples()[:1], tmp_path / "x", input_mode="depth")


def test_truncated_mcap(tmp_path):
    bag = write_dataset_bag(_samples()[:2], tmp_path / "m", storage="mcap")
    f = next(bag.glob("*.mcap"))
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(BagError, match="cannot (open|read) bag|bag .* is damaged"):
        list(read_bag_samples(bag))


def test_to_bag_cli(tmp_path, capsys):
    from mentor3ad.cli import main
    from mentor3ad.io.datasets.synthetic import generate_cell_dataset

    generate_cell_dataset(tmp_path / "cell", n_train=1, n_val=0, n_test_good=1, n_test_per_defect=1,
                          resolution=RES, defect_types=["scratch"])
    rc = main(["to-bag", "--data", str(tmp_path / "cell"), "--split", "test", "--out", str(tmp_path / "t.bag"),
               "--storage", "mcap", "--input-mode", "depth"])
    assert rc == 0 and "wrote 2 samples (2 with ground-truth masks)" in capsys.readouterr().out
    back = list(read_bag_samples(tmp_path / "t.bag", input_mode="depth"))
    assert [s.defect for s in back] == ["good", "scratch"] and [s.label for s in back] == [0, 1]


def test_approximate_pairing_out_of_order_and_single_camera_info(tmp_path):
    from rosbags.rosbag2 import Writer

    from mentor3ad.io import depth as depth_io
    from mentor3ad.io import msgconv
    from mentor3ad.io.bags import _typestore, rosbags_factory
    from mentor3ad.io.inputs import TOPICS

    MSG_TYPES = {key: topic.msg_type for key, topic in TOPICS.items()}
    ts = _typestore()
    make = rosbags_factory(ts)
    samples = _samples()[:3]
    K = camera_matrix(RES)
    t0 = 10**12
    with Writer(tmp_path / "live", version=8) as w:
        c_img = w.add_connection("/camera/image", MSG_TYPES["image"], typestore=ts)
        c_dep = w.add_connection("/camera/depth", MSG_TYPES["depth"], typestore=ts)
        c_inf = w.add_connection("/camera/camera_info", MSG_TYPES["camera_info"], typestore=ts)
        info = make.camera_info(depth_io.camera_info_fields(K, RES[1], RES[0]), make.header(t0, "cam"))
        w.write(c_inf, t0, ts.serialize_cdr(info, MSG_TYPES["camera_info"]))  # latched once
        # depth arrives 7 ms after its image, and after the NEXT image (out of order)
        events = []
        for i, s in enumerate(samples):
            stamp = t0 + i * 5_000_000
            events.append((stamp, c_img, make.image(msgconv.rgb_to_image_fields(s.rgb), make.header(stamp, "cam")), "image"))
            events.append((stamp + 7_000_000, c_dep,
                           make.image(depth_io.xyz_to_depth_fields(s.xyz), make.header(stamp + 2_000_000, "cam")), "depth"))
        for t, conn, msg, key in sorted(events, key=lambda e: e[0]):
            w.write(conn, t, ts.serialize_cdr(msg, MSG_TYPES[key]))
    got = list(read_bag_samples(tmp_path / "live", input_mode="depth", slop_ns=2_500_000))
    assert [g.stamp_ns for g in got] == [t0, t0 + 5_000_000, t0 + 10_000_000]
    for s, g in zip(samples, got):
        assert np.array_equal(g.rgb, s.rgb) and g.label is None and g.mask is None
        valid = s.xyz[..., 2] > 0
        assert np.allclose(g.xyz[valid], s.xyz[valid], atol=2e-6)
    assert list(read_bag_samples(tmp_path / "live", input_mode="depth", slop_ns=1_000_000)) == []
    with pytest.raises(BagError, match="no topic.*gt_mask"):
        list(read_bag_samples(tmp_path / "live", input_mode="depth", require_mask=True))


# ------------------------------------------------------------------ container integrity (CRCs, SQLite)
def _mcap(tmp_path, name="m", count=16):
    samples = [generate_sample(i, (64, 64), name=f"p/{i}") for i in range(count)]  # 1.3 MiB: two chunks
    bag = write_dataset_bag(samples, tmp_path / name, storage="mcap")
    return bag, next(bag.glob("*.mcap"))


def _records(data):
    """[(offset, opcode, content)] of the data section, up to and including DataEnd."""
    import struct

    out, offset = [], 8
    while True:
        opcode, length = data[offset], struct.unpack_from("<Q", data, offset + 1)[0]
        out.append((offset, opcode, data[offset + 9:offset + 9 + length]))
        if opcode == 0x0F:
            return out
        offset += 9 + length


def test_mcap_bags_carry_real_crcs(tmp_path):
    import struct
    import zlib

    from mentor3ad.io.bag_storage import verify_mcap

    bag, path = _mcap(tmp_path)
    data = path.read_bytes()
    records = _records(data)
    chunks = [(o, c) for o, op, c in records if op == 0x06]
    assert len(chunks) >= 2
    for _, content in chunks:  # start, end, uncompressed size, CRC, compression "" (4 bytes), records length
        size, crc = struct.unpack_from("<QI", content, 16)
        assert content[28:32] == b"\0\0\0\0" and crc != 0
        assert crc == zlib.crc32(content[40:40 + struct.unpack_from("<Q", content, 32)[0]]) and size > 0
    data_end = records[-1]
    assert struct.unpack_from("<I", data_end[2])[0] == zlib.crc32(data[:data_end[0]]) != 0
    footer = len(data) - 8 - 29
    summary_start = struct.unpack_from("<Q", data, footer + 9)[0]
    assert struct.unpack_from("<I", data, footer + 25)[0] == zlib.crc32(data[summary_start:footer + 25]) != 0
    assert verify_mcap(path) == len(chunks)
    assert len(list(read_bag_samples(bag))) == 16


def test_corrupted_chunk_is_refused_naming_bag_and_position(tmp_path):
    bag, path = _mcap(tmp_path)
    data = bytearray(path.read_bytes())
    second = [o for o, op, _ in _records(data) if op == 0x06][1]
    start = second + 9 + 40 + 5000  # 4 KiB inside the second chunk's records
    data[start:start + 4096] = bytes(b ^ 0xFF for b in data[start:start + 4096])
    path.write_bytes(bytes(data))
    with pytest.raises(BagError, match=rf"bag {bag} is damaged: {path}: chunk 1 at byte {second} \(to byte \d+\) is "
                                       r"corrupt: CRC-32 of its records is [0-9a-f]{8}, recorded [0-9a-f]{8}"):
        list(read_bag_samples(bag))


def test_corruption_outside_the_chunks_is_refused(tmp_path):
    bag, path = _mcap(tmp_path)
    original = path.read_bytes()
    index = next(o for o, op, _ in _records(original) if op == 0x07)  # a message index record
    data = bytearray(original)
    data[index + 20] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BagError, match=r"is corrupt between byte 8 and \d+ \(outside the chunks"):
        list(read_bag_samples(bag))
    data = bytearray(original)
    footer = len(data) - 8 - 29
    data[footer - 30] ^= 0x01  # the summary (chunk indexes, statistics, offsets)
    path.write_bytes(bytes(data))
    with pytest.raises(BagError, match=r"summary \(index\) section before byte \d+ is corrupt"):
        list(read_bag_samples(bag))


def test_mcap_without_crcs_still_reads(tmp_path):
    # files of other writers may carry no CRCs (0 = not computed, per the MCAP specification)
    import struct

    from mentor3ad.io.bag_storage import verify_mcap

    bag, path = _mcap(tmp_path, count=3)
    data = bytearray(path.read_bytes())
    for offset, opcode, _ in _records(data):
        if opcode == 0x06:
            data[offset + 9 + 24:offset + 9 + 28] = b"\0\0\0\0"
        elif opcode == 0x0F:
            data[offset + 9:offset + 13] = b"\0\0\0\0"
    data[len(data) - 8 - 4:len(data) - 8] = struct.pack("<I", 0)
    path.write_bytes(bytes(data))
    assert verify_mcap(path) == 0 and len(list(read_bag_samples(bag))) == 3


def test_corrupted_sqlite_page_is_refused(tmp_path):
    bag = write_dataset_bag(_samples(), tmp_path / "s")
    db = next(bag.glob("*.db3"))
    data = bytearray(db.read_bytes())
    data[6 * 4096:6 * 4096 + 64] = b"\xa5" * 64  # the header of a b-tree page
    db.write_bytes(bytes(data))
    with pytest.raises(BagError, match=rf"bag {bag} is damaged: {db} (is corrupt \(SQLite quick_check: |is not a "
                                       r"readable SQLite database)"):
        list(read_bag_samples(bag))
