"""The package's error classes: one base, one class per kind of expected failure (no imports).

Every message names what is wrong and where (file, topic, config key, parameter). Callers that must
keep running (the inspector node, CLI commands) catch :class:`Mentor3ADError` and report its text in
one line; anything else is an internal error (a bug) and is reported as such.

============================  ===========================================================================
``InputError``                bad sensor data: a message or array that cannot be one observation of a part
                              (encoding, sizes, field layout, too few valid points, implausible geometry)
``ConfigError``               a configuration file, key, value, node parameter or command-line option
``ModelLoadError``            a model file that is missing, corrupt, of another format, or refused by
                              validation (non-finite weights, impossible dimensions, a failed warm-up)
``ModelError``                a loaded model that cannot process features it is given (internal mismatch)
``BagError``                  a rosbag2 recording that cannot be read or written (missing topics, corruption)
============================  ===========================================================================

The value-like errors also derive from ``ValueError`` and the model errors from ``RuntimeError``, so
code written against the builtin classes keeps working.
"""


class Mentor3ADError(Exception):
    """Base of every expected mentor3ad failure; ``str(error)`` is a complete one-line reason."""


class InputError(Mentor3ADError, ValueError):
    """Bad input data (messages, arrays): the part cannot be inspected from it."""


class ConfigError(Mentor3ADError, ValueError):
    """A bad configuration value, file, parameter or option (the message names it)."""


class ModelLoadError(Mentor3ADError, RuntimeError):
    """A model file cannot be used: missing, corrupt, wrong format or identity, or failed validation."""


class ModelError(Mentor3ADError, RuntimeError):
    """A loaded model cannot process what it is given (e.g. heads that do not fit the features)."""


class BagError(Mentor3ADError, ValueError):
    """A rosbag2 recording cannot be read or written (the message names the bag and the problem)."""


__all__ = ["Mentor3ADError", "InputError", "ConfigError", "ModelLoadError", "ModelError", "BagError"]
