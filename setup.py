"""ament_python package definition for mentor3ad.

Two install paths are supported:

* colcon (``colcon build``) runs ``setup.py install``/``develop``; ``setup.cfg`` then puts the console
  scripts into ``<prefix>/lib/mentor3ad`` where ``ros2 run`` and launch ``Node()`` look for them.
* pip (``pip install .`` into a virtual environment, used on machines without a ROS install) ignores
  ``setup.cfg`` and puts console scripts into ``<prefix>/bin``.  For that path only, small shell
  launchers are added as data files under ``<prefix>/lib/mentor3ad`` that exec the ``bin`` script, so
  the ament index layout is the same either way.
"""
import os
import sys
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mentor3ad"

# executable name -> "module:function"
EXECUTABLES = {
    "inspector_node": "mentor3ad.ros.nodes.inspector:main",
    "inspector_lifecycle_node": "mentor3ad.ros.nodes.inspector:lifecycle_main",
    "trainer_node": "mentor3ad.ros.nodes.trainer:main",
    "evaluator_node": "mentor3ad.ros.nodes.evaluator:main",
    "replay_node": "mentor3ad.ros.nodes.replay:main",
    "robot_cell_example": "mentor3ad.ros.nodes.robot_cell:main",
    "mentor3ad": "mentor3ad.cli:main",
}

HERE = os.path.dirname(os.path.abspath(__file__))


def _pip_launchers():
    """Shell launchers for ``lib/mentor3ad`` when building a wheel (pip); colcon uses setup.cfg."""
    wheel_commands = {"bdist_wheel", "editable_wheel", "dist_info"}
    if not wheel_commands.intersection(sys.argv):
        return []
    out_dir = os.path.join(HERE, "build", "pip_launchers")
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name in EXECUTABLES:
        path = os.path.join(out_dir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write('#!/bin/sh\n# pip-installed launcher: <prefix>/lib/mentor3ad/X -> <prefix>/bin/X\n')
            f.write(f'exec "$(dirname "$0")/../../bin/{name}" "$@"\n')
        os.chmod(path, 0o755)
        paths.append(os.path.relpath(path, HERE))
    return [(f"lib/{PACKAGE}", paths)]


setup(
    name=PACKAGE,
    version="0.1.0",
    package_dir={"": "src"},
    packages=find_packages(where="src"),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(glob("launch/*.launch.py"))),
        (f"share/{PACKAGE}/config", sorted(glob("config/*.yaml")) + sorted(glob("config/*.xml"))),
    ]
    + _pip_launchers(),
    install_requires=["setuptools"],
    # `colcon test` runs pytest (instead of unittest) when the package declares it as its test dependency
    extras_require={"test": ["pytest"]},
    zip_safe=False,
    maintainer="mentor3ad developers",
    maintainer_email="dev@mentor3ad.invalid",
    description="Mentor3AD RGB + 3D anomaly detection for ROS 2 inspection cells",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"{k} = {v}" for k, v in EXECUTABLES.items()]},
)
