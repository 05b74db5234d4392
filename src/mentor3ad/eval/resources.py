"""Resources of a run for benchmark reports: peak memory of a process and the machine description."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Dict, Optional


def peak_rss_mb(pid: Optional[int] = None) -> float:
    """Peak resident set size (VmHWM of /proc/<pid>/status) in MiB; NaN where /proc is unavailable."""
    try:
        for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    if pid is None:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    return float("nan")


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to the current RSS (Linux ``clear_refs`` 5); False when not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def machine_info(device) -> Dict[str, Any]:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "device": str(device), "cuda_available": torch.cuda.is_available()}
    try:
        model = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        info["cpu_model"] = model[0] if model else platform.processor()
    except OSError:
        info["cpu_model"] = platform.processor()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
