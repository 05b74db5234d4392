"""rclpy refuses one call site logging at two severities; our outcome logger must not trip over it."""
import pytest

rclpy = pytest.importorskip("rclpy")
import rclpy.logging  # noqa: E402

from mentor3ad.ros import log_outcome  # noqa: E402


def test_alternating_outcomes_from_one_call_site_do_not_raise():
    logger = rclpy.logging.get_logger("mentor3ad_test_outcome")
    for ok in (True, False, True, False):
        log_outcome(logger, ok, f"outcome {ok}")  # the same line, both severities


def test_the_rclpy_behaviour_this_guards_against():
    logger = rclpy.logging.get_logger("mentor3ad_test_outcome_raw")
    with pytest.raises(ValueError, match="severity cannot be changed"):
        for ok in (True, False):
            (logger.info if ok else logger.error)("same call site")
