"""ModelSlot (mentor3ad.model.serving) on real model files: swap only a model that loaded and self-tested,
keep the old one on a refused file, one load at a time, a load's warnings once in its outcome."""
import logging
import threading

import pytest

pytest.importorskip("torch")

from helpers import train_tiny_model  # noqa: E402
from mentor3ad.model.serving import ModelSlot, OutsideLoads  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two different real model files: (path, model id) each."""
    folder = tmp_path_factory.mktemp("serving")
    first = train_tiny_model(folder / "first.m3ad", n_train=4, n_val=2)
    second = train_tiny_model(folder / "second.m3ad", n_train=5, n_val=2)
    assert first.model_id != second.model_id
    return (folder / "first.m3ad", first.model_id), (folder / "second.m3ad", second.model_id)


def test_refused_file_keeps_the_serving_model(models, tmp_path):
    (first, first_id), (second, second_id) = models
    slot = ModelSlot("cpu")
    assert slot.current() == (None, "", "no model loaded yet")
    outcome = slot.load(str(first))
    assert outcome.ok and first_id in outcome.message and outcome.seconds > 0
    detector, model_id, error = slot.current()
    assert detector is not None and model_id == first_id and error == ""

    truncated = tmp_path / "truncated.m3ad"
    truncated.write_bytes(second.read_bytes()[: second.stat().st_size // 2])
    refused = slot.load(str(truncated))
    assert not refused.ok and "cannot load model" in refused.message
    assert refused.message.endswith(f"keeping model {first_id}")
    assert slot.current() == (detector, first_id, "")  # the same object still serves

    slot.set_missing("no model loaded: parameter model_path is empty")  # keeps a serving model
    assert slot.current()[1] == first_id
    assert slot.load(str(second)).ok and slot.current()[1] == second_id
    slot.clear("cleaned up")
    assert slot.current() == (None, "", "cleaned up")


def test_refused_file_without_a_model_says_why(tmp_path):
    slot = ModelSlot("cpu")
    missing = tmp_path / "absent.m3ad"
    outcome = slot.load(str(missing))
    assert not outcome.ok and "keeping" not in outcome.message
    assert slot.current()[0] is None and slot.current()[2].startswith(f"no model loaded: cannot load model '{missing}'")


def test_a_second_load_is_refused_while_one_runs(models):
    (first, first_id), (second, _) = models
    slot = ModelSlot("cpu")
    outcomes, finished = [], threading.Event()

    def done(outcome):
        outcomes.append(outcome)
        finished.set()

    assert slot.load_async(str(first), done)
    assert slot.loading
    assert not slot.load_async(str(second), done)  # refused: no call, no second thread
    assert finished.wait(120.0)
    slot.wait(10.0)
    assert not slot.loading and len(outcomes) == 1 and outcomes[0].ok
    assert slot.current()[1] == first_id
    assert slot.load_async(str(second), done)  # free again once the first load ended
    slot.wait(120.0)
    assert len(outcomes) == 2 and outcomes[1].ok


def test_load_warnings_come_once_in_the_outcome(models):
    (first, first_id), _ = models

    class Capture(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    forwarded = Capture()  # what a node's log forwarding sees (it adds OutsideLoads)
    forwarded.addFilter(OutsideLoads())
    package_logger = logging.getLogger("mentor3ad")
    package_logger.addHandler(forwarded)
    try:
        slot = ModelSlot("cpu")
        outcomes = [slot.load(str(first)), slot.load(str(first))]
        logging.getLogger("mentor3ad.test").warning("outside a load")
    finally:
        package_logger.removeHandler(forwarded)
    for outcome in outcomes:  # the tiny model's backbones are random-init: each load says so once
        assert outcome.ok and outcome.warning.startswith(f"model {first_id}: ")
        assert outcome.warning.count("RGB backbone") == 1 and outcome.warning.count("Point-MAE backbone") == 1
    assert forwarded.messages == ["outside a load"]
