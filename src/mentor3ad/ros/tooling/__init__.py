"""Test, bench and commissioning tooling around the nodes (not used by the nodes themselves).

* :mod:`.graph`: node processes, result collection, the replay evaluation graph (tests, demo);
* :mod:`.round_trip`: ``mentor3ad bench --ros`` round trips through a live ``inspector_node``;
* :mod:`.camera_load`: ``mentor3ad bench --while-training``, a camera at a fixed rate, idle and beside a
  training ``trainer_node``;
* :mod:`.pair_publisher`: ``python -m mentor3ad.ros.tooling.pair_publisher``, synthetic input pairs.
"""
