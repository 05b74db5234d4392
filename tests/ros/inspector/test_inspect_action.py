"""The ~/inspect action's answers when no verdict can come, on a real inspector node without a model (so it
starts at once) and a client node in the same process, talking over DDS: no model -> the claimed pair's ERROR
at once; inspection disabled -> an ERROR at the timeout naming ~/enable; images without 3D data -> named in
the timeout's reason; shutdown -> every waiting goal gets an ERROR before the node goes."""
import time

import pytest

rclpy = pytest.importorskip("rclpy")
action = pytest.importorskip("mentor3ad_interfaces.action", reason="mentor3ad_interfaces not built (./run.sh setup)")

pytestmark = [pytest.mark.ros, pytest.mark.timeout(60)]
SEC = 1_000_000_000
SUCCEEDED, ABORTED = 4, 6


@pytest.fixture
def cell():
    """(inspector node in request mode without a model, client node, executor spinning both, publish(kind, sec))."""
    from rclpy.action import ActionClient
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from mentor3ad.ros.messages import message_class
    from mentor3ad.ros.nodes.inspector import InspectorNode
    from mentor3ad.ros.tooling.pair_publisher import build_pair, to_messages

    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = InspectorNode(context=context, namespace="/inspect_edge", parameter_overrides=[
        Parameter("trigger_mode", value="request"), Parameter("pair_timeout", value=0.3),
        Parameter("diagnostics_period", value=0.2)])
    client_node = rclpy.create_node("robot", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(client_node)
    pubs = {key: client_node.create_publisher(message_class(f"sensor_msgs/msg/{kind}"), f"/inspect_edge/{key}", 10)
            for key, kind in (("image", "Image"), ("points", "PointCloud2"))}
    client = ActionClient(client_node, action.InspectPart, "/inspect_edge/inspector/inspect")

    def spin_until(done, timeout):
        end = time.monotonic() + timeout
        while not done() and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
        return done()

    def publish(kind, sec):
        messages = to_messages(build_pair(kind, 32, 32, "points"), sec * SEC)
        for key, msg in messages.items():
            pubs[key].publish(msg)

    def send(part_id, timeout_s):
        sent = client.send_goal_async(action.InspectPart.Goal(part_id=part_id, timeout_s=timeout_s))
        assert spin_until(sent.done, 10.0) and sent.result().accepted
        return sent.result().get_result_async()

    assert spin_until(lambda: client.server_is_ready() and all(p.get_subscription_count() for p in pubs.values()),
                      10.0)
    try:
        yield node, spin_until, publish, send
    finally:
        node.stop()
        client.destroy()  # rclpy's destroy_node leaves action clients
        for n in (client_node, node):
            n.destroy_node()
        rclpy.shutdown(context=context)


def answer(future):
    from mentor3ad.ros.inspection_codec import decode

    return future.result().status, decode(future.result().result.result)


def test_without_a_model_the_claimed_pair_is_answered_error_at_once(cell):
    node, spin_until, publish, send = cell
    future = send("SN-1", 20.0)
    started = time.monotonic()
    publish("good", 2_000_000_000)
    assert spin_until(future.done, 10.0)
    status, result = answer(future)
    assert status == SUCCEEDED and result.verdict.value == "ERROR" and result.part_id == "SN-1"
    assert "no model" in result.reason and result.stamp_ns == 2_000_000_000 * SEC
    assert time.monotonic() - started < 5.0


def test_a_goal_while_inspection_is_disabled_ends_with_an_error_naming_enable(cell):
    node, spin_until, publish, send = cell
    node.inspector.enabled = False  # as ~/enable false does
    future = send("SN-2", 1.0)
    publish("good", 2_000_000_001)
    assert spin_until(future.done, 5.0)
    status, result = answer(future)
    assert status == ABORTED and result.reason == "inspection disabled (~/enable): no pair judged within 1 s"
    assert node.inspector.outputs["inspect"].counts["unrequested_pairs"] == 1  # dropped, counted, not answered


def test_images_without_3d_data_are_named_in_the_timeout(cell):
    node, spin_until, publish, send = cell
    future = send("SN-3", 1.5)
    publish("lone_image", 2_000_000_002)
    publish("lone_image", 2_000_000_003)
    assert spin_until(future.done, 5.0)
    status, result = answer(future)
    assert status == ABORTED
    assert result.reason == "no camera data within 1.5 s: 2 image(s) but no complete image + 3D pair (2 without 3D " \
                            "data)", result.reason
    level, message, values = node.inspector.outputs["inspect"].diagnostics()
    assert level == "WARN" and "SN-3: no camera data" in message and values["goals_timed_out"] == 1


def test_waiting_goals_get_an_error_when_the_node_shuts_down(cell):
    node, spin_until, publish, send = cell
    futures = [send(f"SN-{i}", 60.0) for i in (4, 5)]
    node.stop()  # closes the outputs: the action answers what waits and lets the executor send it
    assert spin_until(lambda: all(f.done() for f in futures), 5.0)
    for future in futures:
        status, result = answer(future)
        assert status == ABORTED and result.reason == "the inspector is shutting down"


def test_a_destroyed_inspector_leaves_the_graph_with_its_inspect_server():
    """rclpy's destroy_node leaves action servers, and with them the node, in the DDS graph until the garbage
    collector finds them: a robot program then sends its goals to a dead ~/inspect server."""
    from mentor3ad.ros.nodes.inspector import InspectorNode
    from mentor3ad.ros.tooling.graph import spin_until

    contexts = [rclpy.context.Context(), rclpy.context.Context()]
    for context in contexts:
        rclpy.init(context=context)
    node = InspectorNode(context=contexts[0], namespace="/destroyed_test")
    observer = rclpy.create_node("observer", context=contexts[1])
    server = "/destroyed_test/inspector/inspect/_action/send_goal"
    seen = lambda: (observer.count_services(server),  # noqa: E731
                    ("inspector", "/destroyed_test") in observer.get_node_names_and_namespaces())
    try:
        assert spin_until(observer, lambda: seen() == (1, True), 10.0), seen()
        node.stop()
        node.destroy_node()  # `node` stays referenced: nothing is left to the garbage collector
        assert spin_until(observer, lambda: seen() == (0, False), 10.0), seen()
    finally:
        observer.destroy_node()
        for context in contexts:
            rclpy.shutdown(context=context)
