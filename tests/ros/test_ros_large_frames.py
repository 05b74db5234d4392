"""Real camera sizes: a stock driver (its own process on Fast DDS defaults, rclpy's default QoS: reliable,
depth 10) sends 1280x720 image + organized cloud pairs (a 14 MiB cloud each, 28 times Fast DDS's default
shared-memory segment). With the README's configuration for large frames, `input_reliability: reliable` and
the inspector's own profile (config/fastdds_inspector.xml), every part is judged: lost UDP fragments are
repaired instead of losing the cloud (best effort lost 13 of 20 clouds at 1 part/s on this machine, see
benchmarks/large_frames.py)."""
import os
import sys
import xml.etree.ElementTree as ET

import pytest

from helpers import REPO_ROOT, train_tiny_model

# One 1280x720 cell part, re-stamped per pair and published as a stock driver does (no XML profile).
DRIVER = r"""
import sys, time
import rclpy
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image, PointCloud2
from mentor3ad.ros import configure_local_discovery
from mentor3ad.ros.tooling.pair_publisher import build_pair, to_messages

count, width, height, rate = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
configure_local_discovery()
rclpy.init()
node = rclpy.create_node("stock_driver")
pubs = {"image": node.create_publisher(Image, "image", QoSProfile(depth=10)),
        "points": node.create_publisher(PointCloud2, "points", QoSProfile(depth=10))}
pair = to_messages(build_pair("good", width, height, "points", scene="cell"), 0)
assert len(pair["points"].data) == width * height * 16
deadline = time.monotonic() + 60.0
while any(p.get_subscription_count() == 0 for p in pubs.values()):
    if time.monotonic() > deadline:
        sys.exit("no subscriber")
    time.sleep(0.05)
time.sleep(0.5)
for i in range(count):
    for key in ("image", "points"):
        pair[key].header.stamp.sec, pair[key].header.stamp.nanosec = 2000 + i, 0
        pubs[key].publish(pair[key])
    time.sleep(1.0 / rate)
time.sleep(2.0)
node.destroy_node()
rclpy.try_shutdown()
"""


@pytest.mark.ros
@pytest.mark.timeout(180)
def test_a_stock_driver_sending_1280x720_pairs_gets_every_part_judged(tmp_path, ros_node):
    from mentor3ad.ros.dds import FASTDDS_PROFILE_ENV
    from mentor3ad.ros.tooling.graph import NodeProcess, ResultCollector, inspector_command

    model_path = tmp_path / "tiny.m3ad"
    train_tiny_model(model_path, n_train=4, n_val=2)
    env = dict(os.environ)
    env.pop(FASTDDS_PROFILE_ENV, None)  # the driver on defaults; the inspector loads its own profile
    count = 4
    params = {"device": "cpu", "queue_policy": "all", "input_reliability": "reliable"}
    collector = ResultCollector(ros_node, "/inspector/result")
    with NodeProcess(inspector_command(model_path, params=params), env) as inspector:
        assert collector.wait_for_publisher(60.0), inspector.output()[-3000:]
        with NodeProcess([sys.executable, "-c", DRIVER, str(count), "1280", "720", "1"], env) as driver:
            results = collector.wait_for(count, 60.0)
            assert driver.wait(60.0) == 0, driver.output()[-2000:]
        log = inspector.output()[-3000:]
    assert [r.stamp_ns for r in results] == [(2000 + i) * 10**9 for i in range(count)], log
    assert [str(r.verdict) for r in results if str(r.verdict) not in ("PASS", "FAIL")] == [], \
        [r.reason for r in results]


def test_the_fast_dds_profiles_are_well_formed_and_sized_for_large_frames():
    """Fast DDS falls back to its defaults without a word when a profile does not parse (a '--' in a comment
    is enough), which loses large clouds again: both profiles parse, with the sizes the README's table used."""
    ns = {"f": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}

    def transport(name, kind):
        root = ET.parse(REPO_ROOT / "config" / name).getroot()
        found = [t for t in root.iterfind("f:transport_descriptors/f:transport_descriptor", ns)
                 if t.findtext("f:type", namespaces=ns) == kind]
        assert len(found) == 1, (name, kind)
        return {child.tag.split("}")[1]: child.text for child in found[0]}

    assert transport("fastdds_inspector.xml", "UDPv4")["receiveBufferSize"] == str(64 * 2**20)
    shm = transport("fastdds_large_shm.xml", "SHM")
    assert (shm["segment_size"], shm["port_queue_capacity"]) == (str(128 * 2**20), "4096")
