"""No part without a verdict, over real DDS with every node as its console script:

* a stock driver (rclpy default QoS, Fast DDS defaults: no profile on either side) sends 224x224 pairs
  (784 KiB clouds): every pair gets a result;
* images whose cloud never comes get an explicit ERROR each, and /diagnostics counts them;
* pairs published while ~/reload_model runs (twice) all get results;
* the trainer hands its new model to a running inspector that started with another model_path.
"""
import json
import os
import sys

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("torch")

from helpers import TINY_MODEL_CONFIG, train_tiny_model  # noqa: E402
from mentor3ad.ros.tooling.graph import NodeProcess, ResultCollector, executable, inspector_command, spin_until  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]
SEC = 1_000_000_000
START_NS = 1_900_000_000 * SEC
PERIOD_NS = 100_000_000


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    first, second = root / "first.safetensors", root / "second.safetensors"
    return first, train_tiny_model(first).model_id, second, train_tiny_model(second, n_train=5).model_id


def stock_environment():
    """The environment of a process on Fast DDS defaults (no XML profile)."""
    env = dict(os.environ)
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    return env


def publisher(sequence, size="64x64", rate=10.0, qos="deep", seed=0, start_ns=START_NS):
    return NodeProcess([sys.executable, "-m", "mentor3ad.ros.tooling.pair_publisher", "--sequence", ",".join(sequence),
                        "--scene", "cell", "--size", size, "--rate", str(rate), "--qos", qos, "--seed", str(seed),
                        "--start-ns", str(start_ns), "--period-ns", str(PERIOD_NS)], stock_environment())


def test_a_stock_driver_on_fast_dds_defaults_gets_every_large_pair_answered(ros_node, tiny_models):
    model, model_id, _, _ = tiny_models
    n = 20
    collector = ResultCollector(ros_node, "/inspector/result")
    inspector = inspector_command(model, params={"device": "cpu", "queue_size": n})  # default input QoS
    with NodeProcess(inspector, stock_environment()) as node:
        assert collector.wait_for_publisher(60.0), node.output()
        with publisher(["good"] * n, size="224x224", rate=5.0, qos="default") as driver:
            collector.wait_for(n, 120.0)
            assert driver.wait(60.0) == 0, driver.output()
        collector.wait_for(n + 1, 0.5)
    stamps = [START_NS + i * PERIOD_NS for i in range(n)]
    assert sorted(r.stamp_ns for r in collector.results) == stamps, node.output()
    assert all(r.verdict in ("PASS", "FAIL") and r.model_id == model_id for r in collector.results)


def test_lone_images_get_one_explicit_error_each_and_are_counted(ros_node, tiny_models):
    from diagnostic_msgs.msg import DiagnosticArray

    model, _, _, _ = tiny_models
    sequence = ["good", "lone_image", "lone_image", "good", "lone_image", "good"]
    statuses = []
    ros_node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: statuses.extend(
        s for s in m.status if s.name == "/inspector: inspector"), 50)
    collector = ResultCollector(ros_node, "/inspector/result")
    params = {"device": "cpu", "pair_timeout": 0.5, "diagnostics_period": 0.2}
    with NodeProcess(inspector_command(model, params=params)) as node:
        assert collector.wait_for_publisher(60.0), node.output()
        with publisher(sequence) as driver:
            collector.wait_for(len(sequence), 60.0)
            assert driver.wait(30.0) == 0, driver.output()
        collector.wait_for(len(sequence) + 1, 1.0)  # and no second result for any image
        by_stamp = collector.by_stamp()
        assert len(collector.results) == len(sequence) == len(by_stamp), collector.results
        for i, kind in enumerate(sequence):
            result = by_stamp[START_NS + i * PERIOD_NS]
            if kind == "lone_image":
                assert result.verdict == "ERROR" and "no points within 0.5 s of the image" in result.reason
            else:
                assert result.verdict in ("PASS", "FAIL"), result
        spin_until(ros_node, lambda: any(kv.key == "lone_images" and kv.value == "3"
                                         for s in statuses[-1:] for kv in s.values), 5.0)
    values = {kv.key: kv.value for kv in statuses[-1].values}
    assert values["received_image"] == "6" and values["received_points"] == "3" and values["lone_images"] == "3"
    assert values["pairs"] == "3" and values["errored"] == "3" and values["received"] == "6"


def test_pairs_published_while_the_model_reloads_all_get_results(ros_node, tiny_models):
    from std_srvs.srv import Trigger

    model, model_id, _, _ = tiny_models
    n = 30
    collector = ResultCollector(ros_node, "/inspector/result")
    client = ros_node.create_client(Trigger, "/inspector/reload_model")
    with NodeProcess(inspector_command(model, params={"device": "cpu", "queue_size": n})) as node:
        assert collector.wait_for_publisher(60.0), node.output()
        assert spin_until(ros_node, client.service_is_ready, 20.0)
        with publisher(["good"] * n, rate=10.0) as driver:
            answers = []
            for at in (5, 15):
                spin_until(ros_node, lambda: len(collector.results) >= at, 30.0)
                future = client.call_async(Trigger.Request())
                assert spin_until(ros_node, future.done, 60.0), node.output()
                answers.append(future.result())
            collector.wait_for(n, 60.0)
            assert driver.wait(30.0) == 0, driver.output()
    assert all(a.success for a in answers), [a.message for a in answers]
    assert sorted(r.stamp_ns for r in collector.results) == [START_NS + i * PERIOD_NS for i in range(n)]
    assert all(r.verdict in ("PASS", "FAIL") and r.model_id == model_id for r in collector.results)


def test_the_trainer_swaps_its_model_into_an_inspector_started_with_another_one(ros_node, tiny_models, tmp_path):
    import yaml

    from mentor3ad.io.bags import write_dataset_bag
    from mentor3ad.io.datasets.synthetic import camera_matrix, generate_sample

    first, first_id, _, _ = tiny_models
    bag = write_dataset_bag([generate_sample(200 + i, (64, 64)) for i in range(6)], tmp_path / "good",
                            camera_info=camera_matrix((64, 64)))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(json.loads(json.dumps(TINY_MODEL_CONFIG))))
    new_model = tmp_path / "new" / "model.safetensors"
    collector = ResultCollector(ros_node, "/inspector/result")
    with NodeProcess(inspector_command(first, params={"device": "cpu"})) as node:
        assert collector.wait_for_publisher(60.0), node.output()
        trainer = [executable("trainer_node"), "--ros-args", "-p", f"bag_paths:=['{bag}']",
                   "-p", f"output_model_path:={new_model}", "-p", f"config_file:={config}", "-p", "device:=cpu",
                   "-p", "reload_service:=/inspector/reload_model"]
        with NodeProcess(trainer) as training:
            assert training.wait(180.0) == 0, training.output() + node.output()
            assert "/inspector/reload_model: loaded model" in training.output()
        with publisher(["good"], start_ns=START_NS + 5 * SEC) as driver:
            collector.wait_for(1, 60.0)
            assert driver.wait(30.0) == 0
        refused = [executable("trainer_node"), "--ros-args", "-p", f"bag_paths:=['{bag}']",
                   "-p", f"output_model_path:={tmp_path / 'other.safetensors'}", "-p", f"config_file:={config}",
                   "-p", "device:=cpu", "-p", "reload_service:=/nobody/reload_model"]
        with NodeProcess(refused) as failing:
            assert failing.wait(240.0) == 1, failing.output()
            assert "not swapped in" in failing.output()
    assert collector.results[0].verdict in ("PASS", "FAIL")
    assert collector.results[0].model_id not in ("", first_id)  # the trainer's model answers now
