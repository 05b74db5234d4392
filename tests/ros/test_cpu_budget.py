"""CPU budgets (threads / interop_threads / nice) applied by real node processes and by `mentor3ad train`:
what the process reports and what the kernel shows in /proc for every thread."""
import json
import os
import re
import time
from pathlib import Path

import pytest
import yaml

from helpers import TINY_MODEL_CONFIG, run_mentor3ad
from mentor3ad.cpu_budget import CpuBudget, apply_budget
from mentor3ad.package_files import package_executable

pytest.importorskip("rclpy")
pytest.importorskip("rosbags")

from mentor3ad.io.bags import write_dataset_bag  # noqa: E402
from mentor3ad.io.datasets.synthetic import camera_matrix, generate_sample  # noqa: E402
from mentor3ad.ros.tooling.graph import NodeProcess  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(180)]
SIZE = (64, 64)


def thread_niceness(pid: int) -> set:
    """Niceness of every thread of a process, from /proc (field 19 of each task's stat)."""
    values = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            values.add(int((task / "stat").read_text().rsplit(")", 1)[1].split()[16]))
        except (OSError, IndexError):
            pass  # a thread that ended meanwhile
    return values


def wait_for_line(process: NodeProcess, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line for line in process.output().splitlines() if text in line]
        if lines:
            return lines[-1]
        assert process.proc.poll() is None, process.output()
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} line within {timeout} s:\n{process.output()}")


@pytest.fixture(scope="module")
def good_bag(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget")
    bag = write_dataset_bag([generate_sample(i, SIZE, name=f"good/{i}") for i in range(5)], root / "good",
                            camera_info=camera_matrix(SIZE))
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(json.loads(json.dumps(TINY_MODEL_CONFIG))))
    return root, bag, config


def test_inspector_node_applies_its_threads_and_nice_to_every_thread():
    base = os.getpriority(os.PRIO_PROCESS, 0)
    cmd = [package_executable("inspector_node"), "--ros-args", "-r", "__ns:=/budget_test", "-p", "threads:=1",
           "-p", "interop_threads:=1", "-p", "nice:=3", "-p", "device:=cpu"]
    with NodeProcess(cmd) as inspector:
        line = wait_for_line(inspector, "CPU budget:", 60.0)
        assert f"torch threads 1, interop threads 1, nice {min(base + 3, 19)}" in line, line
        assert thread_niceness(inspector.proc.pid) == {min(base + 3, 19)}  # DDS and executor threads too
        # the inference thread owns the torch threads; the executor thread runs torch serially
        assert "inference thread: torch threads 1 " in wait_for_line(inspector, "inference thread:", 60.0)
    cmd[cmd.index("threads:=1")] = "threads:=2"
    with NodeProcess(cmd) as inspector:
        assert "inference thread: torch threads 2 " in wait_for_line(inspector, "inference thread:", 60.0)


def test_one_thread_owns_the_torch_threads():
    """parallel_torch_thread / serial_torch act on the calling thread only (libgomp keeps one team per thread
    that ran parallel work: the inspector keeps a single one, see mentor3ad.cpu_budget); serial_torch restores."""
    import threading

    import torch

    from mentor3ad.cpu_budget import parallel_torch_thread, serial_torch

    seen, both_set, checked = {}, threading.Barrier(2), threading.Barrier(2)

    def inference():
        parallel_torch_thread(2)
        both_set.wait(10)
        torch.ones(100_000).sum()
        seen["inference"] = torch.get_num_threads()
        checked.wait(10)

    def loader():
        parallel_torch_thread(3)
        with serial_torch():
            both_set.wait(10)
            torch.ones(100_000).sum()
            seen["loading"] = torch.get_num_threads()
            checked.wait(10)
        seen["after loading"] = torch.get_num_threads()

    threads = [threading.Thread(target=inference), threading.Thread(target=loader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert seen == {"inference": 2, "loading": 1, "after loading": 3}


def test_trainer_node_yields_to_the_inspector_by_default(good_bag):
    root, bag, config = good_bag
    base = os.getpriority(os.PRIO_PROCESS, 0)
    out = root / "model.safetensors"
    cmd = [package_executable("trainer_node"), "--ros-args", "-p", f"bag_paths:=['{bag}']",
           "-p", f"output_model_path:={out}", "-p", f"config_file:={config}", "-p", "device:=cpu"]
    with NodeProcess(cmd, env=dict(os.environ, OMP_NUM_THREADS="2")) as trainer:
        line = wait_for_line(trainer, "CPU budget:", 60.0)
        seen = thread_niceness(trainer.proc.pid)  # still importing torch: seconds before it ends
        assert trainer.wait(150.0) == 0, trainer.output()
    # the node's defaults (config/trainer.yaml): 1 torch thread, nice +19, idle OpenMP threads sleep
    assert re.search(rf"torch threads 1, interop threads \d+, nice {min(base + 19, 19)}, OMP_WAIT_POLICY PASSIVE, "
                     r"open3d threads 1$", line), line
    assert seen == {min(base + 19, 19)}, seen
    assert out.is_file()


def test_mentor3ad_train_threads_and_nice(good_bag):
    root, bag, config = good_bag
    base = os.getpriority(os.PRIO_PROCESS, 0)
    code, stdout, output = run_mentor3ad("train", "--no-progress", "--bag", str(bag), "--config", str(config),
                                         "--out", str(root / "cli.safetensors"), "--threads", "1", "--nice", "2")
    assert code == 0, output
    budget = json.loads(stdout.strip().splitlines()[-1])["cpu_budget"]
    assert budget == {"threads": 1, "interop_threads": budget["interop_threads"], "nice": min(base + 2, 19),
                      "omp_wait_policy": "PASSIVE", "open3d_threads": 1, "notes": []}, budget
    code, _, output = run_mentor3ad("train", "--bag", str(bag), "--config", str(config), "--threads", "-1")
    assert code != 0 and "threads and interop_threads must be >= 0" in output, output


def test_budget_problems_and_notes():
    import subprocess
    import sys

    assert "nice must be an increment in [-20, 19]" in CpuBudget(nice=25).problem()
    assert CpuBudget(threads=1, nice=10).problem() == ""
    with pytest.raises(ValueError, match="must be >= 0"):
        apply_budget(CpuBudget(threads=-2))
    # applied after torch worked: the wait policy and the inter-op pool cannot change any more, and it says so
    code = ("import torch; torch.ones(4).sum(); torch.set_num_interop_threads(1); "
            "from mentor3ad.cpu_budget import CpuBudget, apply_budget; "
            "print(apply_budget(CpuBudget(threads=1, interop_threads=2, nice=1)).describe())")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "torch threads 1, interop threads 1" in out.stdout, out.stdout
    assert "OMP_WAIT_POLICY=PASSIVE not applied: torch was imported first" in out.stdout, out.stdout
    assert "interop threads 2 not applied" in out.stdout, out.stdout


def test_threads_bound_open3d_too():
    """open3d's TBB threads ignore OMP_NUM_THREADS (normals and FPFH ran on every core beside a 1-thread torch):
    a budget with threads bounds them (process-wide), 0 leaves open3d's default; the FPFH then runs on that
    many threads (the process's CPU time over the call stays within its wall time)."""
    import subprocess
    import sys

    code = ("import time, numpy as np, open3d as o3d; "
            "from mentor3ad.cpu_budget import CpuBudget, apply_budget; "
            "print(apply_budget(CpuBudget(threads={threads})).describe()); print(o3d.utility.get_max_threads()); "
            "rng = np.random.default_rng(0); xy = rng.uniform(-0.05, 0.05, (20000, 2)); "
            "cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.c_[xy, 0.4 + 0.01 * np.sin(80 * xy[:, :1])])); "
            "cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=0.1, max_nn=30)); "
            "wall, cpu = time.perf_counter(), time.process_time(); "
            "o3d.pipelines.registration.compute_fpfh_feature(cloud, o3d.geometry.KDTreeSearchParamHybrid(radius=0.25, max_nn=100)); "
            "print((time.process_time() - cpu) / (time.perf_counter() - wall))")
    one = subprocess.run([sys.executable, "-c", code.format(threads=1)], capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr
    described, limit, cpu_per_wall = one.stdout.strip().splitlines()[-3:]
    assert described.endswith("open3d threads 1") and limit == "1", one.stdout
    assert float(cpu_per_wall) < 1.2, one.stdout  # one thread: CPU time = wall time (2 cores unbounded: ~2)
    default = subprocess.run([sys.executable, "-c", code.format(threads=0)], capture_output=True, text=True,
                             timeout=120)
    assert default.returncode == 0, default.stderr
    assert default.stdout.strip().splitlines()[-3].endswith("open3d threads all"), default.stdout
