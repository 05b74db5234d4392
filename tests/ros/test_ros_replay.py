"""``replay_node`` / ``mentor3ad replay``: bag messages in recording-time order with /clock, over DDS."""
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("rosbags")

from helpers import train_tiny_model  # noqa: E402
from mentor3ad.ros.tooling.graph import NodeProcess, spin_until  # noqa: E402
from mentor3ad.package_files import package_executable  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(90)]

SEC = 1_000_000_000
# (topic, log time ns) in the order they are written; replay must sort them by time
WRITES = [("/image", 10 * SEC), ("/other", 10 * SEC + 50_000_000), ("/image", 10 * SEC + 300_000_000),
          ("/image", 10 * SEC + 100_000_000), ("/other", 10 * SEC + 200_000_000)]


def write_bag(path):
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    Image = store.types["sensor_msgs/msg/Image"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    with Writer(path, version=9) as writer:
        conns = {t: writer.add_connection(t, "sensor_msgs/msg/Image", typestore=store) for t in ("/image", "/other")}
        for topic, t in sorted(WRITES, key=lambda w: w[0]):  # grouped by topic: not in time order
            header = Header(stamp=Time(sec=t // SEC, nanosec=t % SEC), frame_id=topic)
            msg = Image(header=header, height=1, width=2, encoding="mono8", is_bigendian=0, step=2,
                        data=np.array([1, 2], np.uint8))
            writer.write(conns[topic], t, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))


@pytest.mark.parametrize("launcher", ["replay_node", "mentor3ad"])
def test_replay_in_time_order_with_clock(tmp_path, ros_node, launcher):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    bag = tmp_path / "bag"
    write_bag(bag)
    received, clocks = [], []
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    for topic in ("/image", "/other"):
        ros_node.create_subscription(Image, topic, lambda m: received.append(
            (m.header.frame_id, m.header.stamp.sec * SEC + m.header.stamp.nanosec)), qos)
    ros_node.create_subscription(Clock, "/clock", lambda m: clocks.append(m.clock.sec * SEC + m.clock.nanosec), 50)
    exe = package_executable(launcher)
    assert exe, f"{launcher} not installed (run ./run.sh setup or colcon build)"
    cmd = [exe] + (["replay"] if launcher == "mentor3ad" else []) + [
        str(bag), "--rate", "2", "--clock", "--wait-for-subscribers", "--linger", "0.5"]
    with NodeProcess(cmd) as replay:
        spin_until(ros_node, lambda: len(received) == len(WRITES) or replay.proc.poll() is not None, 30.0)
        assert replay.wait(15.0) == 0, replay.output()
        spin_until(ros_node, lambda: False, 0.3)
    assert received == sorted(((t, s) for t, s in WRITES), key=lambda x: x[1]), replay.output()
    assert clocks and clocks == sorted(clocks)
    assert clocks[0] == WRITES[0][1] and clocks[-1] == max(t for _, t in WRITES)


def test_replay_errors_are_named(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mentor3ad.ros.nodes.replay", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "not a rosbag2 recording" in proc.stderr
    bag = tmp_path / "bag"
    write_bag(bag)
    proc = subprocess.run([sys.executable, "-m", "mentor3ad.ros.nodes.replay", str(bag), "--topics", "/missing"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "/missing" in proc.stderr and "/image" in proc.stderr


@pytest.mark.timeout(120)
def test_replay_evaluation_runs_nodes_with_the_inspector_profile(tmp_path, monkeypatch):
    """mentor3ad demo's ROS stage: 224x224 parts from a bag through inspector + evaluator + replay processes,
    each started with FASTDDS_DEFAULT_PROFILES_FILE = the package's inspector profile (inputs over UDP)."""
    pytest.importorskip("torch")
    from mentor3ad.io.bags import write_dataset_bag
    from mentor3ad.io.datasets.synthetic import generate_sample
    from mentor3ad.ros.tooling import graph
    from mentor3ad.ros.dds import FASTDDS_PROFILE_ENV, inspector_profile_path

    started = []

    class RecordingNodeProcess(graph.NodeProcess):
        def __init__(self, cmd, env=None):
            started.append((cmd[0], (env or {}).get(FASTDDS_PROFILE_ENV)))
            super().__init__(cmd, env)

    monkeypatch.setattr(graph, "NodeProcess", RecordingNodeProcess)
    monkeypatch.delenv(FASTDDS_PROFILE_ENV, raising=False)
    model_path = tmp_path / "tiny.m3ad"
    train_tiny_model(model_path, n_train=4, n_val=2)
    parts = [generate_sample(300, (224, 224), name="test/good/0"),
             generate_sample(301, (224, 224), defect="dent", name="test/dent/0")]
    bag = write_dataset_bag(parts, tmp_path / "bag", storage="mcap", start_stamp_ns=1_800_000_000 * SEC)
    out = graph.run_replay_evaluation(model_path, bag, tmp_path / "report", n_pairs=len(parts), rate=5.0, timeout_s=60.0)
    assert [r.verdict in ("PASS", "FAIL") for r in out["results"]] == [True, True], out["results"]
    profile = str(inspector_profile_path())
    assert sorted(Path(exe).name for exe, _ in started) == ["evaluator_node", "inspector_node", "replay_node"]
    assert all(env_profile == profile for _, env_profile in started), started


@pytest.mark.timeout(180)
def test_paced_replay_gets_every_part_answered_by_a_slow_inspector(tmp_path, ros_node):
    """A bag of 10 Hz parts played as fast as possible into an inspector whose queue holds one part: paced
    by the result topic, every part is inspected (none SKIPPED); unpaced, the same replay loses parts."""
    pytest.importorskip("torch")
    from mentor3ad.io.bags import write_dataset_bag
    from mentor3ad.io.datasets.synthetic import generate_sample
    from mentor3ad.io.inputs import TOPICS
    from mentor3ad.ros.tooling.graph import ResultCollector, executable, inspector_command

    model_path = tmp_path / "tiny.m3ad"
    train_tiny_model(model_path, n_train=4, n_val=2)
    parts = [generate_sample(400 + i, (64, 64), name=f"test/good/{i}") for i in range(6)]
    bag = write_dataset_bag(parts, tmp_path / "bag", storage="mcap", start_stamp_ns=1_800_000_000 * SEC)
    recorded = {key: TOPICS[key].recorded for key in ("image", "points")}
    cmd = inspector_command(model_path, reliable_inputs=list(recorded.values()), input_depth=20,
                            params={"queue_size": 1}, remaps=recorded)
    collector = ResultCollector(ros_node, "/inspector/result")
    verdicts = {}
    with NodeProcess(cmd) as inspector:
        assert collector.wait_for_publisher(120.0), inspector.output()
        for paced in (True, False):
            collector.results.clear()
            # one part in flight for a one-part queue (the worker may not have taken the last part yet)
            pacing = (["--pace-on", recorded["image"], "--pace-results", "/inspector/result", "--max-in-flight", "1"]
                      if paced else [])
            replay_cmd = [executable("replay_node"), str(bag), "--rate", "0", "--wait-for-subscribers",
                          "--linger", "0.2", "--topics", *recorded.values(), *pacing]
            with NodeProcess(replay_cmd) as replay:
                spin_until(ros_node, lambda: replay.proc.poll() is not None, 120.0)
                assert replay.wait(10.0) == 0, replay.output()
            spin_until(ros_node, lambda: len(collector.results) >= len(parts), 30.0)
            verdicts[paced] = [r.verdict for r in collector.results]
            if paced:
                assert "6 result(s) for 6 part(s)" in replay.output(), replay.output()
    assert len(verdicts[True]) == len(parts) and set(verdicts[True]) <= {"PASS", "FAIL"}, verdicts
    assert len(verdicts[False]) == len(parts) and "SKIPPED" in verdicts[False], verdicts


@pytest.mark.timeout(240)
def test_replay_waits_for_a_slow_starting_inspector(tmp_path, ros_node):
    """The inspector process starts 22 s late (on a loaded machine its start-up took 17-26 s), longer than the
    replay's old fixed 20 s wait for subscribers: evaluate.launch's replay arguments wait for the inspector's
    ~/result (its ready signal), so every part is answered, none after a 120 s pace timeout."""
    pytest.importorskip("torch")
    from mentor3ad.io.bags import write_dataset_bag
    from mentor3ad.io.datasets.synthetic import generate_sample
    from mentor3ad.io.inputs import TOPICS
    from mentor3ad.ros.tooling.graph import executable, inspector_command

    model_path = tmp_path / "tiny.m3ad"
    train_tiny_model(model_path, n_train=4, n_val=2)
    parts = [generate_sample(500 + i, (64, 64), name=f"test/good/{i}") for i in range(4)]
    bag = write_dataset_bag(parts, tmp_path / "bag", storage="mcap", start_stamp_ns=1_800_000_000 * SEC)
    recorded = {key: TOPICS[key].recorded for key in ("image", "points")}
    inspector = ["bash", "-c", 'sleep 22; exec "$@"', "slow_start",
                 *inspector_command(model_path, reliable_inputs=list(recorded.values()), input_depth=20, remaps=recorded)]
    replay_cmd = [executable("replay_node"), str(bag), "--rate", "0", "--wait-for-subscribers", "--wait-for-publisher",
                  "inspector/result", "--wait-timeout", "150", "--topics", *recorded.values(), "--pace-on",
                  recorded["image"], "--pace-results", "inspector/result", "--pace-timeout", "30", "--linger", "0.2"]
    # the replay counts the results it paced by (this test's own subscriber could match the late inspector only
    # after its answers: they are counted where they are awaited)
    with NodeProcess(inspector) as node, NodeProcess(replay_cmd) as replay:
        assert spin_until(ros_node, lambda: replay.proc.poll() is not None, 200.0), replay.output() + node.output()
        assert replay.wait(10.0) == 0, replay.output()
    assert "inspector/result is advertised" in replay.output(), replay.output()
    assert "4 result(s) for 4 part(s)" in replay.output() and " 0 timeout(s)" in replay.output(), replay.output()


def test_replay_fails_without_playing_when_nothing_gets_ready(tmp_path):
    bag = tmp_path / "bag"
    write_bag(bag)
    with NodeProcess([package_executable("replay_node"), str(bag), "--wait-for-publisher", "/nobody/result",
                      "--wait-timeout", "1"]) as replay:
        assert replay.wait(60.0) == 1
    assert "replay_node: error: no publisher on /nobody/result after 1 s" in replay.output(), replay.output()


def test_result_collector_counts_a_late_reader_of_the_results(ros_node):
    """Results are volatile: an evaluator that subscribes after a replay started misses the first ones and waits
    for ever, so ``run_replay_evaluation`` replays only once ``ResultCollector.wait_for_readers`` sees it; that
    wait fails while the reader is missing and holds once it joins."""
    from diagnostic_msgs.msg import DiagnosticArray
    from mentor3ad.ros.tooling.graph import ResultCollector

    topic = "/late_reader_check/result"
    collector = ResultCollector(ros_node, topic)
    assert collector.wait_for_readers(1, 5.0)  # the collector itself
    assert not collector.wait_for_readers(2, 0.5)  # no evaluator yet
    evaluator = rclpy.create_node("late_evaluator", context=ros_node.context)
    try:
        evaluator.create_subscription(DiagnosticArray, topic, lambda msg: None, 10)
        assert collector.wait_for_readers(2, 10.0)
    finally:
        evaluator.destroy_node()


def test_replay_waits_for_another_reader_of_the_results(tmp_path, ros_node):
    """``--wait-for-reader`` (evaluate.launch's replay: the evaluator must read ``inspector/result`` before the
    first part is played, or it misses that part's volatile result): the replay's own result pacer does not
    count, nothing is played while no other node reads the topic, and it plays once one does."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    bag = tmp_path / "bag"
    write_bag(bag)
    replay = package_executable("replay_node")
    with NodeProcess([replay, str(bag), "--wait-for-reader", "/own_reader/result", "--pace-on", "/image",
                      "--pace-results", "/own_reader/result", "--wait-timeout", "1"]) as alone:
        assert alone.wait(60.0) == 1
    assert "no other node reads /own_reader/result after 1 s" in alone.output(), alone.output()

    images = []
    ros_node.create_subscription(Image, "/image", images.append, 10)
    with NodeProcess([replay, str(bag), "--wait-for-reader", "/late_reader/result", "--wait-for-subscribers",
                      "--wait-timeout", "60", "--topics", "/image", "--linger", "0.5"]) as waiting:
        spin_until(ros_node, lambda: ros_node.count_publishers("/image") > 0, 20.0)
        spin_until(ros_node, lambda: waiting.proc.poll() is not None, 2.0)
        assert waiting.proc.poll() is None and images == [], waiting.output()  # held: no reader yet
        ros_node.create_subscription(DiagnosticArray, "/late_reader/result", lambda msg: None, 10)
        assert spin_until(ros_node, lambda: waiting.proc.poll() is not None and len(images) == 3, 30.0), \
            waiting.output()
        assert waiting.wait(10.0) == 0, waiting.output()
    assert "/late_reader/result has a reader" in waiting.output(), waiting.output()
