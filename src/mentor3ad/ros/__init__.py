"""ROS 2 adapters around the model core: nodes, message conversion, synchronization.

Only this sub-package imports ROS (rclpy, message packages).
"""
import os


def configure_local_discovery() -> None:
    """Keep DDS discovery on this machine unless the user chose otherwise.

    Must run before ``rclpy.init()``: sets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (Jazzy and newer)
    and ROS_LOCALHOST_ONLY=1 on Humble, without overriding values already in the environment.
    """
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if os.environ.get("ROS_DISTRO") == "humble":
        os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")


def log_outcome(logger, ok: bool, message: str) -> None:
    """Log ``message`` at INFO when ``ok`` else ERROR.

    One call site per severity: rclpy raises "Logger severity cannot be changed between calls" when a
    single line logs at different severities.
    """
    if ok:
        logger.info(message)
    else:
        logger.error(message)
