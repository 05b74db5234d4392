"""The package's layout rules, checked on the source: lint clean, a layered import graph without cycles, the
core free of ROS imports, ``mentor3ad.config`` free of torch, and no module beyond about 400 lines."""
import ast
import fnmatch
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT

SRC = REPO_ROOT / "src"
PACKAGE_DIR = SRC / "mentor3ad"
MAX_MODULE_LINES = 420
# lower layers never import higher ones; a module may import its own layer (without cycles) and below
LAYERS = [
    ["mentor3ad", "mentor3ad.types", "mentor3ad.errors", "mentor3ad.package_files", "mentor3ad.timing",
     "mentor3ad.cpu_budget"],
    ["mentor3ad.config_schema", "mentor3ad.config"],
    ["mentor3ad.geometry*"],
    ["mentor3ad.io*"],
    ["mentor3ad.backbones*"],
    ["mentor3ad.features*"],
    ["mentor3ad.model*"],
    ["mentor3ad.eval*"],
    ["mentor3ad.records*"],
    ["mentor3ad.jobs"],
    # ROS: shared adapters, the inspector's parts, nodes and tooling, then the command line on top
    ["mentor3ad.ros", "mentor3ad.ros.messages", "mentor3ad.ros.params", "mentor3ad.ros.dds", "mentor3ad.ros.bridges",
     "mentor3ad.ros.sync", "mentor3ad.ros.result_codec", "mentor3ad.ros.inspection_codec",
     "mentor3ad.ros.launch_support"],
    ["mentor3ad.ros.inspector*"],
    ["mentor3ad.ros.nodes*", "mentor3ad.ros.tooling*"],
    ["mentor3ad.dashboard*"],
    ["mentor3ad.cli*"],
]
ROS_PACKAGES = {"rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "std_srvs", "diagnostic_msgs", "builtin_interfaces",
                "launch", "launch_ros", "message_filters", "rosgraph_msgs", "visualization_msgs", "lifecycle_msgs",
                "sensor_msgs_py", "cv_bridge", "geometry_msgs", "mentor3ad_interfaces"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def imports_of(name: str):
    """(imported module, line) for every import statement of module ``name`` (also inside functions)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                yield (candidate if candidate in MODULES else target), node.lineno


def layer_of(name: str) -> int:
    for index, patterns in enumerate(LAYERS):
        if any(fnmatch.fnmatch(name, p) or name == p.rstrip("*") for p in patterns):
            return index
    raise AssertionError(f"module {name} is in no layer of tests/test_layout.py")


def test_pyflakes_finds_nothing():
    pyflakes = pytest.importorskip("pyflakes.api")
    from pyflakes.reporter import Reporter

    class Collect:
        def __init__(self):
            self.lines = []

        def write(self, text):
            self.lines.append(text)

    out = Collect()
    count = pyflakes.checkRecursive([str(SRC), str(REPO_ROOT / "tests"), str(REPO_ROOT / "launch"),
                                     str(REPO_ROOT / "setup.py")], Reporter(out, out))
    assert count == 0, "".join(out.lines)


def test_every_module_is_in_a_layer_and_imports_only_its_layer_or_below():
    wrong = []
    for name in MODULES:
        for target, line in imports_of(name):
            if target.startswith("mentor3ad") and target in MODULES and layer_of(target) > layer_of(name):
                wrong.append(f"{name}:{line} imports {target} (layer {layer_of(target)} above {layer_of(name)})")
    assert not wrong, "\n".join(wrong)


def test_import_graph_has_no_cycles():
    graph = {name: sorted({t for t, _ in imports_of(name) if t in MODULES and t != name}) for name in MODULES}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    assert not cycles, f"import cycles: {cycles}"


def test_core_imports_no_ros():
    offenders = [f"{name}:{line} imports {target}" for name in MODULES if not name.startswith("mentor3ad.ros")
                 for target, line in imports_of(name) if target.split(".")[0] in ROS_PACKAGES]
    assert not offenders, "\n".join(offenders)


def test_config_does_not_import_torch():
    code = "import sys, mentor3ad.config as c; c.load_config(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(SRC)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_no_module_is_too_long():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
