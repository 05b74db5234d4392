"""Data in and out, without ROS: message fields <-> arrays (:mod:`.msgconv`, :mod:`.depth`), input modes
(:mod:`.inputs`), rosbag2 recordings (:mod:`.bags`), datasets on disk (:mod:`.datasets`) and atomic
file writes (:mod:`.files`)."""
