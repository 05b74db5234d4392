"""The package's ROS 2 nodes: top-level node classes, one module each, with a ``main`` console script.

:func:`run_node` is the shared main loop: local-only discovery, ``rclpy.init``, a single-threaded
executor (inference runs on the nodes' own worker threads; rclpy's MultiThreadedExecutor was measured
to busy-loop under sim time, /clock at 100 Hz, starving inference: latency 0.33 s -> 10+ s), a clean
shutdown, and configuration errors (:class:`~mentor3ad.errors.ConfigError`) as one line, exit code 2.
"""
from __future__ import annotations

import sys
from typing import Callable, List, Optional

from ...errors import ConfigError
from .. import configure_local_discovery


def run_node(node_factory: Callable, argv: Optional[List[str]], prog: str,
             loop: Optional[Callable] = None, dds_profile: bool = False) -> int:
    """Create the node and spin it until Ctrl-C; ``loop(executor, node) -> exit code`` replaces the plain spin.
    dds_profile: load the package's inspector Fast DDS profile unless the user set one (large inputs)."""
    import faulthandler
    import signal

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    configure_local_discovery()
    if dds_profile:
        from ..dds import use_package_profile

        use_package_profile()
    rclpy.init(args=argv)
    # launch escalates to SIGTERM when a node has not exited 5 s after SIGINT: print every thread's stack
    # first (into the launch log), then let rclpy's handler run, so a hang at shutdown can be diagnosed
    faulthandler.register(signal.SIGTERM, all_threads=True, chain=True)
    node = None
    code = 0
    try:
        try:
            node = node_factory()
        except (ConfigError, ValueError) as exc:  # configuration errors: a clear message, no traceback
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if loop is None:
            executor.spin()
        else:
            code = loop(executor, node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # launch forwards Ctrl-C to its children, which already got it from the terminal: a second SIGINT
        # during the clean-up must not interrupt it (and print a traceback)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if node is not None:
            if hasattr(node, "stop"):
                node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
    return code
