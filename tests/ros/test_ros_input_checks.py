"""Inputs unlike the model's training data (issue 23: a model trained on float depth fed 16UC1 millimetres;
issue 18: other sizes and aspect ratios) on a real inspector_node in depth mode over DDS: judged with a WARN
diagnostic naming the difference (logged once per kind), or an ERROR result with the reason when the depth
is in the wrong units."""
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("torch")

from helpers import train_tiny_model  # noqa: E402
from mentor3ad.ros.tooling.graph import NodeProcess, ResultCollector, inspector_command, spin_until  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]
SEC = 1_000_000_000
STATUS = "/inspector: inspector"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return path, train_tiny_model(path)


def depth_part(stamp_ns, width=64, height=64, encoding="32FC1", scale=1.0, seed=0):
    """A synthetic-cell part as image + depth + camera_info messages (depth z times ``scale``)."""
    from mentor3ad.io import msgconv
    from mentor3ad.io.inputs import input_mode
    from mentor3ad.ros.messages import build_messages
    from mentor3ad.ros.tooling.pair_publisher import cell_scene

    rgb, xyz, K = cell_scene(width, height, seed)
    fields = {"image": msgconv.rgb_to_image_fields(rgb, "rgb8"),
              **input_mode("depth").to_fields(xyz * scale, K, encoding)}
    return build_messages(fields, stamp_ns)


def test_a_float_depth_model_fed_16uc1_other_sizes_and_millimetres(ros_node, tiny_model):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    path, detector = tiny_model
    assert detector.input_profile.z_lattice_share < 0.1 and detector.input_profile.sizes == ((64, 64),)
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    publishers = {"image": ros_node.create_publisher(Image, "image", qos),
                  "depth": ros_node.create_publisher(Image, "depth", qos),
                  "camera_info": ros_node.create_publisher(CameraInfo, "camera_info", qos)}
    statuses = []
    ros_node.create_subscription(DiagnosticArray, "/diagnostics", lambda array: statuses.extend(
        s for s in array.status if s.name == STATUS), 100)
    collector = ResultCollector(ros_node, "/inspector/result")
    sent = []

    def send(**part):
        stamp = 1_950_000_000 * SEC + len(sent) * SEC // 10
        sent.append(stamp)
        for key, message in depth_part(stamp, **part).items():
            publishers[key].publish(message)
        assert len(collector.wait_for(len(sent), 60.0)) == len(sent)
        return collector.results[-1]

    def status(predicate):
        assert spin_until(ros_node, lambda: statuses and predicate(statuses[-1]), 10.0), \
            statuses[-1].message if statuses else None
        return statuses[-1], {kv.key: kv.value for kv in statuses[-1].values}

    command = inspector_command(path, reliable_inputs=["/image", "/depth", "/camera_info"], input_depth=50,
                                params={"device": "cpu", "input_mode": "depth", "diagnostics_period": 0.3})
    with NodeProcess(command) as inspector:
        assert collector.wait_for_publisher(90.0), inspector.output()
        assert spin_until(ros_node, lambda: all(p.get_subscription_count() for p in publishers.values()), 20.0)
        assert send().verdict in ("PASS", "FAIL")  # as trained: float depth, 64x64
        first, values = status(lambda s: True)
        assert first.level == DiagnosticStatus.OK, first.message
        assert values["input_profile"] == detector.input_profile.describe()

        quantised = [send(encoding="16UC1", seed=seed) for seed in (1, 2)]
        assert [r.verdict in ("PASS", "FAIL") for r in quantised] == [True, True]  # judged, with a warning
        warned, values = status(lambda s: "depth quantised to 1 mm" in s.message)
        assert warned.level == DiagnosticStatus.WARN and values["input_mismatch_depth_quantisation"] == "2"
        assert "while the model was trained on unquantised depth" in warned.message

        other = send(width=96, height=64)  # another size and aspect ratio
        assert other.verdict in ("PASS", "FAIL")
        warned, values = status(lambda s: "input size 96x64 differs from the training size(s) 64x64" in s.message)
        assert values["input_mismatch_size"] == "1" and values["input_mismatch_aspect_ratio"] == "1"

        volume = [-1000.0, 1000.0, -1000.0, 1000.0, 0.0, 1000.0]  # wide enough that millimetres get through it
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        client = ros_node.create_client(SetParameters, "/inspector/set_parameters")
        assert spin_until(ros_node, client.service_is_ready, 20.0)
        future = client.call_async(SetParameters.Request(
            parameters=[Parameter("working_volume", value=volume).to_parameter_msg()]))
        assert spin_until(ros_node, future.done, 20.0) and future.result().results[0].successful
        millimetres = send(scale=1000.0)  # a driver's millimetres declared as metres (32FC1)
        assert millimetres.verdict == "ERROR" and millimetres.reason.startswith(
            "input unlike the model's training data: median depth 3"), millimetres.reason
        assert "x outside the training depths" in millimetres.reason and "wrong units" in millimetres.reason
        refused, values = status(lambda s: s.level == DiagnosticStatus.ERROR)
        assert "wrong units" in refused.message and values["input_mismatch_z_units"] == "1"
        output = inspector.output()
    warnings = [line for line in output.splitlines() if "input unlike model" in line]
    assert len([line for line in warnings if "depth_quantisation" in line]) == 1, output  # once per kind
    assert {kind for kind in ("depth_quantisation", "size", "aspect_ratio", "z_units")
            if any(kind in line for line in warnings)} == {"depth_quantisation", "size", "aspect_ratio", "z_units"}
