"""Launch-to-ready of inspector_node: process start -> ~/result matched ("ready") -> first result.

    ./run.sh exec python benchmarks/launch_to_ready.py --model runs/demo/model.safetensors [--runs 3]

Each run starts the console script ``inspector_node`` (a fresh process, as ``ros2 launch`` does) and
measures, from the spawn: ``ready_s`` (its ``~/result`` publisher is matched by this process: the node
publishes results only after the model is loaded, self-tested and warmed up), the node's own ``startup_s``
(logged "inspector ready ... N s after start": node construction only, without the interpreter and
imports), ``ready_cpu_s`` (the process's CPU seconds when ready: on a shared machine wall time grows with
the load, CPU time much less), and ``first_result_s`` (a pair published by a stock driver process, 224x224
cell scene, as soon as the node is ready, answered). Runs in its own ROS domain (``--domain``). Prints one
row per run and the medians.
"""
import argparse
import re
import statistics
import sys
import time
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads; Linux /proc): on a shared machine
    the start-up's wall time grows with the load, its CPU time much less."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", default="224x224")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--domain", type=int, default=None,
                        help="ROS_DOMAIN_ID of the measurement (default: one derived from this process id, so that "
                             "another inspector on the machine cannot answer for the one measured)")
    args = parser.parse_args()
    import os

    os.environ["ROS_DOMAIN_ID"] = str(args.domain if args.domain is not None else 100 + os.getpid() % 100)

    import rclpy

    from mentor3ad.ros import configure_local_discovery
    from mentor3ad.ros.tooling.graph import NodeProcess, ResultCollector, inspector_command

    configure_local_discovery()
    rclpy.init()
    node = rclpy.create_node("launch_to_ready_probe")
    rows = []
    try:
        for run in range(args.runs):
            collector = ResultCollector(node, "/inspector/result")
            if collector.wait_for_publisher(1.0):
                print(f"another node publishes /inspector/result in ROS domain {os.environ['ROS_DOMAIN_ID']}: "
                      "choose another --domain", file=sys.stderr)
                return 1
            started = time.monotonic()
            with NodeProcess(inspector_command(args.model.resolve(), params={"device": "cpu"})) as inspector:
                if not collector.wait_for_publisher(args.timeout):
                    print(inspector.output()[-3000:], file=sys.stderr)
                    return 1
                ready = time.monotonic() - started
                cpu = cpu_seconds(inspector.proc.pid)
                driver = [sys.executable, "-m", "mentor3ad.ros.tooling.pair_publisher", "--count", "1", "--size", args.size,
                          "--scene", "cell", "--qos", "default", "--seed", str(run)]
                with NodeProcess(driver):
                    collector.wait_for(1, args.timeout)
                first = time.monotonic() - started
                match = re.search(r"inspector ready: .*?([\d.]+) s after start", inspector.output())
            node.destroy_subscription(collector.sub)
            if not collector.results:
                print(f"run {run}: no result", file=sys.stderr)
                return 1
            rows.append({"ready_s": ready, "startup_s": float(match.group(1)) if match else float("nan"),
                         "ready_cpu_s": cpu, "first_result_s": first, "verdict": collector.results[0].verdict})
            print(f"run {run}: ready {ready:.2f} s (node construction {rows[-1]['startup_s']:.2f} s, {cpu:.2f} CPU "
                  f"s), first result {first:.2f} s ({rows[-1]['verdict']})", flush=True)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    for key in ("ready_s", "startup_s", "ready_cpu_s", "first_result_s"):
        print(f"median {key}: {statistics.median(r[key] for r in rows):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
