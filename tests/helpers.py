"""Shared test helpers (imported as ``from helpers import ...``; tests/ is on sys.path via conftest.py).

Two tiny configurations with random-init backbones keep the suite within CI's limits (2 cores):

* ``TINY_MODEL_CONFIG``: seconds to train on 64x64 synthetic-cell parts; the nodes' and CLI tests' model;
* ``LEARNING_CONFIG``: still tiny, trained a little longer, enough to separate ``synthetic_sample``'s
  defects (training, detector and ablation tests).
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from mentor3ad.package_files import package_executable

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(
    os.environ.get("MENTOR3AD_MVTEC_ROOT", REPO_ROOT / ".." / "shared" / "data" / "mvtec3d" / "cable_gland")
).resolve()
needs_shared_data = pytest.mark.skipif(not (SHARED_DATA / "train").is_dir(),
                                       reason=f"MVTec 3D-AD subset not found at {SHARED_DATA}")

TINY_RGB_OPTIONS = {"model_kwargs": {"depth": 1, "embed_dim": 32, "num_heads": 2, "img_size": 64}}
TINY_POINT_OPTIONS = {"num_groups": 32, "group_size": 8, "depth": 2, "width": 32, "heads": 2, "feature_blocks": [0, 1]}
TINY_FEATURES = dict(rgb_backbone="vit_base_patch8_224.dino", rgb_weights="none", rgb_options=TINY_RGB_OPTIONS,
                     point_backbone="point_mae", point_options=TINY_POINT_OPTIONS, image_size=64, point_image_size=0,
                     feature_resolution=8, min_cell_fraction=0.0)
TINY_MODEL_CONFIG = {
    "features": TINY_FEATURES,
    "model": dict(mentor_dim=16, mfm_hidden_dim=32, mgm_hidden_dim=32, mgm_mentor_dim=16, vote_levels=2),
    # the node tests' tiny model: the parts as given (quarter-turn views for few parts are tests/core/test_views.py's)
    "train": dict(mfm_epochs=2, mgm_epochs=2, vm_steps=10, view_augmentation="none"),
    # the heads alone: the RGB bank's choice (calibration.rgb_bank auto) is tests/core/test_rgb_bank.py's
    "calibration": dict(rgb_bank="never"),
}
LEARNING_FEATURES = {**TINY_FEATURES, "plane_iterations": 64}
LEARNING_MODEL = dict(mentor_dim=16, mfm_hidden_dim=32, mgm_hidden_dim=32, mgm_mentor_dim=8, infonce_max_patches=256,
                      smoothing_sigma=1.0)
LEARNING_TRAIN = dict(mfm_epochs=3, mgm_epochs=6, vm_steps=40, batch_size=2)
LEARNING_CONFIG = {"features": LEARNING_FEATURES, "model": LEARNING_MODEL, "train": LEARNING_TRAIN,
                   "calibration": {"rgb_bank": "never"}}


def learning_config(model=None, train=None, **sections):
    """A Mentor3ADConfig of LEARNING_CONFIG with ``model`` / ``train`` entries and whole sections replaced."""
    from mentor3ad.config import Mentor3ADConfig

    data = {"features": dict(LEARNING_FEATURES), "model": {**LEARNING_MODEL, **(model or {})},
            "train": {**LEARNING_TRAIN, **(train or {})}, "calibration": {"rgb_bank": "never"}}
    data.update(sections)
    return Mentor3ADConfig.from_dict(data)


def set_arguments(config: Dict[str, dict]) -> List[str]:
    """``--set section.key=value`` arguments (JSON values, valid YAML) for a config dict."""
    args = []
    for section, values in config.items():
        for key, value in values.items():
            args += ["--set", f"{section}.{key}={json.dumps(list(value) if isinstance(value, tuple) else value)}"]
    return args


def synthetic_sample(index: int, size: int = 64, defect: str = "good"):
    """A textured disc on a tilted background plane (z ~ 0.5 m); defects: 'bump' (3D) or 'stain' (colour)."""
    from mentor3ad.types import Sample

    rng = np.random.default_rng(index)
    v, u = np.mgrid[0:size, 0:size].astype(np.float32)
    x, y = (u - size / 2) * 0.001, (v - size / 2) * 0.001
    z = 0.5 + 0.02 * x
    disc = (u - size / 2) ** 2 + (v - size / 2) ** 2 < (size / 3) ** 2
    z = np.where(disc, z - 0.02 - 0.001 * np.cos(u / 3 + index * 0.1), z)
    rgb = np.zeros((size, size, 3), np.float32)
    rgb[...] = (60, 60, 70)
    rgb[disc] = (180, 150, 90)
    rgb += 10 * np.sin(u / 2 + index)[..., None] + rng.normal(0, 3, (size, size, 3))
    mask = np.zeros((size, size), np.uint8)
    centre = (size // 2 + 5, size // 2 - 4)
    blot = (u - centre[0]) ** 2 + (v - centre[1]) ** 2 < 6 ** 2
    if defect == "bump":
        z = np.where(blot, z - 0.006, z)
        mask[blot] = 1
    elif defect == "stain":
        rgb[blot] = (20, 200, 30)
        mask[blot] = 1
    xyz = np.stack([x, y, z], -1).astype(np.float32)
    xyz[::9, ::7] = 0.0  # missing measurements
    return Sample(rgb=np.clip(rgb, 0, 255).astype(np.uint8), xyz=xyz, mask=mask, label=int(defect != "good"),
                  defect=defect, name=f"synthetic/{defect}/{index:03d}")


def synthetic_set(count: int, start: int = 0, defects=("good",)):
    return [synthetic_sample(start + i, defect=defects[i % len(defects)]) for i in range(count)]


def train_tiny_model(path, n_train: int = 6, n_val: int = 3, resolution=(64, 64), model=None, calibration=None):
    """Train TINY_MODEL_CONFIG (its ``model`` / ``calibration`` sections updated by ``model`` / ``calibration``)
    on synthetic-cell good samples and save it to ``path``; returns the Detector."""
    from mentor3ad.config import Mentor3ADConfig
    from mentor3ad.io.datasets.synthetic import generate_sample
    from mentor3ad.model.training import train_detector

    config = Mentor3ADConfig.from_dict({**TINY_MODEL_CONFIG, "model": {**TINY_MODEL_CONFIG["model"], **(model or {})},
                                        "calibration": {"rgb_bank": "never", **(calibration or {})}})
    train = [generate_sample(i, resolution, name=f"train/{i}") for i in range(n_train)]
    val = [generate_sample(100 + i, resolution, name=f"val/{i}") for i in range(n_val)]
    detector = train_detector(train, config, val, progress=False)
    detector.save(path)
    return detector


def run_mentor3ad(*args, timeout=300):
    """Run the installed ``mentor3ad`` console script; returns (exit code, stdout, stdout + stderr)."""
    proc = subprocess.run([package_executable("mentor3ad"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stdout + proc.stderr


def setup_executables() -> list:
    """Console-script names from setup.py's EXECUTABLES dict (parsed, not executed)."""
    import ast

    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "EXECUTABLES" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no EXECUTABLES dict")


class InspectorCell:
    """The test's side of a cell around a real /inspector: publishes parts on ``image`` + ``points``
    (reliable), collects its ~/result (``results``) and its /diagnostics status (``statuses``), calls its
    services and sets its parameters. Tests subclass it with their own ``send``."""

    STATUS = "/inspector: inspector"
    call_timeout_s = 60.0

    def __init__(self, node):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, PointCloud2

        from mentor3ad.ros.tooling.graph import ResultCollector

        self.node = node
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.publishers = {"image": node.create_publisher(Image, "image", qos),
                           "points": node.create_publisher(PointCloud2, "points", qos)}
        self.results = ResultCollector(node, "/inspector/result")
        self.statuses = []
        node.create_subscription(DiagnosticArray, "/diagnostics", lambda array: self.statuses.extend(
            s for s in array.status if s.name == self.STATUS), 100)

    def ready(self, process) -> None:
        """Wait until the inspector process answers (its ~/result advertised) and listens to both inputs."""
        from mentor3ad.ros.tooling.graph import spin_until

        assert self.results.wait_for_publisher(90.0), process.output()
        assert spin_until(self.node, lambda: all(p.get_subscription_count() for p in self.publishers.values()),
                          20.0), process.output()

    def call(self, service_type, name: str, request):
        """The response of service ``name`` (fails after ``call_timeout_s``)."""
        from mentor3ad.ros.tooling.graph import spin_until

        client = self.node.create_client(service_type, name)
        assert spin_until(self.node, client.service_is_ready, 20.0), name
        future = client.call_async(request)
        assert spin_until(self.node, future.done, self.call_timeout_s), name
        return future.result()

    def set_parameter(self, name: str, value):
        """(successful, reason) of ``ros2 param set /inspector name value``."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        answer = self.call(SetParameters, "/inspector/set_parameters",
                           SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()]))
        return answer.results[0].successful, answer.results[0].reason
