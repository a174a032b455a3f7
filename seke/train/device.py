"""Which device trains, and the facts about it that go into run metadata.

CUDA is used whenever PyTorch sees a GPU; otherwise the CPU, with a log line that says so
(training still works, just slowly). torch is imported lazily so this module is importable,
and :func:`device_info` answers, without the ``train`` extra installed.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger(__name__)


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def pick_device(prefer: str = "auto", say: Callable[[str], None] | None = None) -> str:
    """``"cuda"`` / ``"cuda:N"`` when asked (``auto``) and present, else ``"cpu"``; logs why."""
    say = say or log.info
    import torch

    if prefer == "cpu":
        say("training device: cpu (requested)")
        return "cpu"
    if torch.cuda.is_available():
        dev = prefer if prefer.startswith("cuda") else "cuda"
        say(f"training device: {dev} ({torch.cuda.get_device_name(torch.device(dev))})")
        return dev
    if prefer.startswith("cuda"):
        raise RuntimeError(f"device {prefer!r} requested but torch {torch.__version__} sees no CUDA GPU")
    say(f"training device: cpu — no CUDA GPU visible to torch {torch.__version__}; "
        "training will be slow (use a GPU node for full runs)")
    return "cpu"


def device_info(device: str | None = None) -> dict[str, Any]:
    """torch version, device type/name, total memory (GiB), CPU threads — JSON-friendly."""
    import os

    info: dict[str, Any] = {"torch": None, "device": device or "cpu", "cuda_available": False,
                            "cpu_count": os.cpu_count()}
    try:
        import torch
    except ImportError:
        info["note"] = "torch not installed (pip install .[train])"
        return info
    info["torch"] = torch.__version__
    info["cuda_available"] = bool(torch.cuda.is_available())
    info["cpu_threads"] = torch.get_num_threads()
    dev = device or ("cuda" if info["cuda_available"] else "cpu")
    info["device"] = dev
    if dev.startswith("cuda") and info["cuda_available"]:
        props = torch.cuda.get_device_properties(torch.device(dev))
        info.update(device_name=props.name, memory_gib=round(props.total_memory / 2**30, 2),
                    multiprocessors=props.multi_processor_count,
                    capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                    bf16=bool(torch.cuda.is_bf16_supported()))
    else:
        import platform

        info.update(device_name=platform.processor() or platform.machine(), memory_gib=_host_memory_gib())
    return info


def _host_memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 2)
    except OSError:
        pass
    return None
