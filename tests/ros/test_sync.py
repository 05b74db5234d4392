"""Our minimal approximate-time synchronizer (used when message_filters is absent), synthetic stamps."""
from types import SimpleNamespace

import pytest

from mentor3ad.io.msgconv import stamp_to_ns
from mentor3ad.ros.sync import SimpleFilter, _ApproximateTimeSynchronizer

MS = 1_000_000


def msg(tag, stamp_ns):
    stamp = SimpleNamespace(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    return SimpleNamespace(tag=tag, header=SimpleNamespace(stamp=stamp))


def make(n_inputs=2, queue_size=10, slop=0.010, **kw):
    inputs = [SimpleFilter() for _ in range(n_inputs)]
    sync = _ApproximateTimeSynchronizer(inputs, queue_size, slop, **kw)
    out = []
    sync.registerCallback(lambda *m: out.append(tuple(x.tag for x in m)))
    return inputs, out


def test_exact_pairs_in_either_arrival_order():
    (a, b), out = make()
    for i in range(3):
        a.signalMessage(msg(f"a{i}", 1_000 * MS + i * 100 * MS))
        b.signalMessage(msg(f"b{i}", 1_000 * MS + i * 100 * MS))
    b.signalMessage(msg("b3", 2_000 * MS))
    a.signalMessage(msg("a3", 2_000 * MS))
    assert out == [("a0", "b0"), ("a1", "b1"), ("a2", "b2"), ("a3", "b3")]


def test_jitter_within_slop_pairs_closest_and_callback_args_follow_messages():
    inputs = [SimpleFilter(), SimpleFilter()]
    sync = _ApproximateTimeSynchronizer(inputs, 10, 0.010)
    out = []
    sync.registerCallback(lambda x, y, extra: out.append((x.tag, y.tag, extra)), "ctx")
    a, b = inputs
    b.signalMessage(msg("b_far", 1_000 * MS - 8 * MS))
    b.signalMessage(msg("b_near", 1_000 * MS + 3 * MS))
    a.signalMessage(msg("a", 1_000 * MS))
    assert out == [("a", "b_near", "ctx")]
    # the unused partner stays queued and pairs with the next message near it
    a.signalMessage(msg("a2", 1_000 * MS - 9 * MS))
    assert out[-1] == ("a2", "b_far", "ctx")


def test_outside_slop_is_never_paired():
    (a, b), out = make(slop=0.010)
    a.signalMessage(msg("a", 1_000 * MS))
    b.signalMessage(msg("b", 1_000 * MS + 11 * MS))
    b.signalMessage(msg("b_edge", 1_000 * MS + 10 * MS))  # spread == slop is not < slop
    assert out == []


def test_queue_overflow_drops_oldest():
    (a, b), out = make(queue_size=2)
    for i in range(3):
        a.signalMessage(msg(f"a{i}", 1_000 * MS + i * 100 * MS))
    b.signalMessage(msg("b0", 1_000 * MS))  # a0 was pushed out
    b.signalMessage(msg("b2", 1_200 * MS))
    assert out == [("a2", "b2")]


def test_three_inputs_need_all_within_slop():
    (a, b, c), out = make(n_inputs=3, slop=0.010)
    a.signalMessage(msg("a", 1_000 * MS))
    b.signalMessage(msg("b", 1_000 * MS + 6 * MS))
    c.signalMessage(msg("c_spread", 1_000 * MS - 6 * MS))  # within slop of b? no: spread 12 ms
    assert out == []
    c.signalMessage(msg("c", 1_000 * MS + 2 * MS))
    assert out == [("a", "b", "c")]


def test_headerless_refused_unless_allowed():
    (a, b), out = make()
    a.signalMessage(SimpleNamespace(tag="no_header"))
    b.signalMessage(msg("b", 1_000 * MS))
    assert out == []


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="queue_size"):
        _ApproximateTimeSynchronizer([SimpleFilter()], 0, 0.1)
    with pytest.raises(ValueError, match="slop"):
        _ApproximateTimeSynchronizer([SimpleFilter()], 1, -1.0)


def test_stamp_to_ns():
    assert stamp_to_ns(SimpleNamespace(sec=2, nanosec=5)) == 2_000_000_005
    assert stamp_to_ns(7) == 7
