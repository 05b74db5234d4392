#!/usr/bin/env bash
# mentor3ad entry point on a machine without a ROS install (and in CI).
#
#   ./run.sh demo            set up .venv if needed, then run the main job on the embedded synthetic cell
#   ./run.sh test [ARGS...]  set up .venv if needed, then run the test suite (pytest ARGS)
#   ./run.sh mentor3ad ARGS  run the command-line tool inside the environment
#   ./run.sh exec CMD...     run any command inside the environment (ros nodes, python, ...)
#
# The environment is a project-local virtual environment (.venv) with the pinned versions of
# requirements/*.txt; it is re-created only when those files change, and the package itself is
# (re)installed in editable mode only when its packaging files change, so a re-run takes seconds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${MENTOR3AD_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

hash_files() { { cat "$@" 2>/dev/null || true; } | sha256sum | cut -c1-16; }

ensure_system_libs() {
  # open3d's wheel links libusb-1.0 (RealSense support); Debian machines may lack it.
  if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "mentor3ad: installing libusb-1.0-0 (needed by open3d) with apt-get ..." >&2
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null
    else
      echo "mentor3ad: open3d needs the system library libusb-1.0 (Debian/Ubuntu: sudo apt-get install libusb-1.0-0)" >&2
    fi
  fi
}

setup_env() {
  ensure_system_libs
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "mentor3ad: Python 3.11 is required (the ROS 2 Kilted wheels on PyPI are cp311); found $("$PYTHON" -V)" >&2
    exit 2
  fi
  local req_hash pkg_hash
  req_hash="$(hash_files "$ROOT"/requirements/*.txt)"
  if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.requirements-hash" 2>/dev/null)" != "$req_hash" ]; then
    echo "mentor3ad: installing pinned dependencies into $VENV (first run: a few minutes, ~6 GB) ..." >&2
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements/test.txt"
    echo "$req_hash" > "$VENV/.requirements-hash"
    rm -f "$VENV/.package-hash"
  fi
  # A regular (non-editable) install: pip then also installs the ament index marker, package.xml,
  # launch/config files under share/ and the lib/mentor3ad launchers (editable wheels skip data_files).
  pkg_hash="$(cd "$ROOT" && hash_files setup.py setup.cfg package.xml resource/* launch/* config/* \
              $(find src -name '*.py' | LC_ALL=C sort))"
  if [ "$(cat "$VENV/.package-hash" 2>/dev/null)" != "$pkg_hash" ]; then
    echo "mentor3ad: installing the mentor3ad package into $VENV ..." >&2
    rm -rf "$ROOT/build/lib" "$ROOT/build/bdist."*  # setuptools keeps deleted modules there: no stale files
    (cd "$ROOT" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
        --no-build-isolation . 2>&1 | grep -v -e "^WARNING: Location" -e BuildBackendWarning -e "warnings.warn" >&2 || true)
    "$VENV/bin/python" -c "import mentor3ad" || { echo "mentor3ad: package install failed" >&2; exit 1; }
    echo "$pkg_hash" > "$VENV/.package-hash"
  fi
  export PATH="$VENV/bin:$PATH"
  export VIRTUAL_ENV="$VENV"
  export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  # DDS discovery stays on this machine (no multicast out of the network interface).
  export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
  if [ "${ROS_DISTRO:-}" = "humble" ]; then export ROS_LOCALHOST_ONLY=1; fi
}

cmd="${1:-demo}"; shift || true
setup_env
case "$cmd" in
  demo) exec "$VENV/bin/mentor3ad" demo "$@" ;;
  test) exec "$VENV/bin/python" -m pytest "$ROOT/tests" "$@" ;;
  mentor3ad) exec "$VENV/bin/mentor3ad" "$@" ;;
  exec) exec "$@" ;;
  setup) echo "mentor3ad: environment ready in $VENV" ;;
  *) echo "usage: ./run.sh {demo|test|mentor3ad|exec|setup} [ARGS...]" >&2; exit 2 ;;
esac
