"""Real camera sizes through ROS: does every part get a result when a stock driver sends large frames?

    ./run.sh exec python benchmarks/large_frames.py --model MODEL [--sizes 224x224,640x480,1280x720,1920x1200]
        [--rates 1,5] [--parts 20] [--configs default,reliable,shm_both] [--json out.json]

For every configuration, frame size and rate: a fresh ``inspector_node`` (console script, CPU) and a driver
process that publishes ``--parts`` image (rgb8) + organized cloud (FLOAT32 x/y/z, 16 B/point) pairs as a
camera driver does: each pair stamped with the wall clock when it is published, on the relative topics
``image`` and ``points``, with rclpy's default QoS (reliable, depth 10: what a stock driver offers; ``--driver-qos
sensor`` for a best-effort one). The driver runs on **Fast DDS defaults** (no XML profile) except in the
``shm_both`` configuration. This process subscribes to ``/inspector/result`` and ``/diagnostics``.

Configurations (the inspector's side, unless said):
  default   the package default: best-effort inputs + config/fastdds_inspector.xml (readers over UDP, 4 MiB buffers)
  reliable  input_reliability:=reliable + config/fastdds_inspector.xml (lost UDP fragments are repaired)
  shm_both  best effort, config/fastdds_large_shm.xml on BOTH the driver and the inspector (a driver-side change)
  custom    --custom-profile XML for the inspector, --custom-reliability (an experiment)

Columns: answered = parts with any result / parts sent (a part whose image is lost gets none; one whose cloud
is lost gets ERROR after pair_timeout); judged = PASS or FAIL; lost (reported) = the inspector's
``lost_<topic>`` diagnostics (what the middleware reported lost); latency = stamp (publish) -> result
received here, p50 / max over answered parts; inspector = its own receive -> publish latency_ms p50; peak
memory = the inspector's VmHWM. Any model works: transport and conversion dominate with a tiny one
(the README's table used the test suite's tiny model); with the default model 5 parts/s exceed this CPU
and the queue answers SKIPPED.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

# the driver: a separate process on Fast DDS defaults (Fast DDS reads its profile once per process)
DRIVER = r"""
import sys, time
import rclpy
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from mentor3ad.ros import configure_local_discovery
try:
    from mentor3ad.ros.tooling.pair_publisher import build_pair, to_messages
except ImportError:  # before the tooling sub-package
    from mentor3ad.ros.pair_publisher import build_pair, to_messages
from sensor_msgs.msg import Image, PointCloud2

width, height, count, rate, qos = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
configure_local_discovery()
rclpy.init()
node = rclpy.create_node("stock_driver")
profile = QoSProfile(depth=10) if qos == "default" else qos_profile_sensor_data
pubs = {"image": node.create_publisher(Image, "image", profile),
        "points": node.create_publisher(PointCloud2, "points", profile)}
pair = to_messages(build_pair("good", width, height, "points", scene="cell"), 0)  # one part, re-stamped
deadline = time.monotonic() + 60.0
while any(p.get_subscription_count() == 0 for p in pubs.values()):
    if time.monotonic() > deadline:
        sys.exit("driver: no subscriber")
    time.sleep(0.05)
time.sleep(0.5)
start = time.monotonic()
for i in range(count):
    time.sleep(max(0.0, start + i / rate - time.monotonic()))
    stamp = time.time_ns()
    for key in ("image", "points"):
        msg = pair[key]
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
        pubs[key].publish(msg)
    print(f"sent {stamp} {(time.time_ns() - stamp) / 1e6:.1f}", flush=True)
time.sleep(2.0)
node.destroy_node()
rclpy.try_shutdown()
"""

CONFIGS = {
    "default": {"inspector_profile": None, "driver_profile": None, "params": {}},
    "reliable": {"inspector_profile": None, "driver_profile": None, "params": {"input_reliability": "reliable"}},
    "shm_both": {"inspector_profile": "large_shm", "driver_profile": "large_shm", "params": {}},
}


def memory_kib(pid: int, field: str) -> int:
    """VmHWM / VmRSS of a process in KiB (0 when unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def environment(profile):
    """os.environ for a process on Fast DDS defaults (profile None; the inspector then loads its own), with
    the package's large_shm profile, or with an XML file (a path)."""
    from mentor3ad.ros.dds import FASTDDS_PROFILE_ENV, large_shm_profile_path

    env = dict(os.environ)
    env.pop(FASTDDS_PROFILE_ENV, None)
    if profile:
        env[FASTDDS_PROFILE_ENV] = str(large_shm_profile_path() if profile == "large_shm" else Path(profile).resolve())
    return env


def percentile(values, q):
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_one(node, model, config, width, height, rate, parts, driver_qos, pair_timeout):
    """One inspector + one driver run -> a row dict."""
    from diagnostic_msgs.msg import DiagnosticArray

    try:
        from mentor3ad.ros.tooling.graph import NodeProcess, ResultCollector, inspector_command, spin_until
    except ImportError:  # before the tooling sub-package
        from mentor3ad.ros.graph import NodeProcess, ResultCollector, inspector_command, spin_until

    arrivals = {}
    collector = ResultCollector(node, "/inspector/result",
                                on_result=lambda r: arrivals.setdefault(r.stamp_ns, time.time_ns()))
    diagnostics = {}

    def on_diagnostics(msg):
        for status in msg.status:
            if status.name.startswith("/inspector") and not status.name.endswith("/result"):
                diagnostics.update({kv.key: kv.value for kv in status.values})

    diag_sub = node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 50)
    params = {"device": "cpu", "queue_policy": "all", "pair_timeout": pair_timeout, **config["params"]}
    row = {"width": width, "height": height, "rate": rate, "parts": parts}
    try:
        with NodeProcess(inspector_command(model, params=params), environment(config["inspector_profile"])) as insp:
            if not collector.wait_for_publisher(120.0):
                raise RuntimeError("inspector not ready:\n" + insp.output()[-3000:])
            rss_ready = memory_kib(insp.proc.pid, "VmRSS")
            cmd = [sys.executable, "-c", DRIVER, str(width), str(height), str(parts), str(rate), driver_qos]
            with NodeProcess(cmd, environment(config["driver_profile"])) as driver:
                spin_until(node, lambda: driver.proc.poll() is not None, parts / rate + 90.0)
            sent = {int(line.split()[1]): float(line.split()[2]) for line in driver.output().splitlines()
                    if line.startswith("sent ")}
            if len(sent) != parts:
                raise RuntimeError("driver failed:\n" + driver.output()[-3000:])
            spin_until(node, lambda: set(sent) <= set(arrivals), pair_timeout + 15.0)
            spin_until(node, lambda: False, 1.5)  # one more diagnostics period
            row["peak_rss_mib"] = memory_kib(insp.proc.pid, "VmHWM") / 1024
            row["ready_rss_mib"] = rss_ready / 1024
            row["inspector_log_tail"] = insp.output()[-1500:]
    finally:
        node.destroy_subscription(collector.sub)
        node.destroy_subscription(diag_sub)
    results = {r.stamp_ns: r for r in collector.results if r.stamp_ns in sent}
    latencies = [(arrivals[s] - s) / 1e6 for s in results]
    verdicts = [str(r.verdict) for r in results.values()]
    row.update(answered=len(results), judged=sum(v in ("PASS", "FAIL") for v in verdicts),
               errors=verdicts.count("ERROR"), skipped=verdicts.count("SKIPPED"),
               error_reasons=sorted({r.reason for r in results.values() if r.reason}),
               latency_p50_ms=percentile(latencies, 0.5), latency_max_ms=max(latencies, default=math.nan),
               inspector_p50_ms=percentile([r.latency_ms for r in results.values() if str(r.verdict) in ("PASS", "FAIL")],
                                           0.5),
               publish_ms_p50=percentile(list(sent.values()), 0.5),
               lost_reported=sum(int(float(v)) for k, v in diagnostics.items() if k.startswith("lost_")),
               received={k: v for k, v in diagnostics.items() if k.startswith("received_")})
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model file (mentor3ad train / the demo's)")
    parser.add_argument("--sizes", default="224x224,640x480,1280x720,1920x1200")
    parser.add_argument("--rates", default="1,5", help="parts per second, comma-separated")
    parser.add_argument("--parts", type=int, default=20)
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated: {', '.join(CONFIGS)}")
    parser.add_argument("--driver-qos", choices=("default", "sensor"), default="default",
                        help="default: reliable depth 10 (rclpy's default, a stock driver); sensor: best effort")
    parser.add_argument("--pair-timeout", type=float, default=2.0, help="the inspector's pair_timeout (s)")
    parser.add_argument("--custom-profile", type=Path, help="the custom configuration's inspector profile (XML)")
    parser.add_argument("--custom-reliability", default="best_effort", help="the custom configuration's inputs")
    parser.add_argument("--json", type=Path, help="write every row here")
    args = parser.parse_args()
    CONFIGS["custom"] = {"inspector_profile": args.custom_profile, "driver_profile": None,
                         "params": {"input_reliability": args.custom_reliability}}

    import rclpy

    from mentor3ad.ros import configure_local_discovery

    configure_local_discovery()
    # a DDS domain of its own (inherited by the inspector and driver), as the test suite does: a shared machine
    os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 150))
    rclpy.init()
    node = rclpy.create_node("large_frames_probe")
    rows = []
    header = ("| inspector config | frame | parts/s | answered | judged | ERROR | lost (reported) | latency p50 / max ms "
              "| inspector p50 ms | peak memory MiB |")
    print(header)
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    try:
        for config in args.configs.split(","):
            for size in args.sizes.split(","):
                width, height = (int(v) for v in size.lower().split("x"))
                for rate in (float(r) for r in args.rates.split(",")):
                    row = run_one(node, args.model.resolve(), CONFIGS[config], width, height, rate, args.parts,
                                  args.driver_qos, args.pair_timeout)
                    row["config"] = config
                    rows.append(row)
                    print(f"| {config} | {width}x{height} | {rate:g} | {row['answered']}/{row['parts']} | "
                          f"{row['judged']} | {row['errors']} | {row['lost_reported']} | "
                          f"{row['latency_p50_ms']:.0f} / {row['latency_max_ms']:.0f} | {row['inspector_p50_ms']:.0f} | "
                          f"{row['peak_rss_mib']:.0f} |", flush=True)
                    if row["error_reasons"]:
                        print(f"  errors: {'; '.join(row['error_reasons'])[:300]}", file=sys.stderr, flush=True)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1, default=str))
    rmem_max = Path("/proc/sys/net/core/rmem_max").read_text().strip()
    print(f"driver: Fast DDS defaults unless shm_both, QoS {args.driver_qos}; net.core.rmem_max {rmem_max}; "
          f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"median publish call {statistics.median(r['publish_ms_p50'] for r in rows):.1f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
