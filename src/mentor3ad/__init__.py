"""mentor3ad: Mentor3AD RGB + 3D anomaly detection, as a plain Python library and ROS 2 nodes.

The model core (everything outside :mod:`mentor3ad.ros`) imports no ROS package.
"""
__version__ = "0.1.0"
