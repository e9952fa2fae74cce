"""What a measurement ran on, for the reports and the benchmark's JSON: CPU, cores, accelerator, versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    return cpu


def machine() -> dict:
    """This machine and its libraries, as the benchmark stores them."""
    import torch
    import transformers

    return {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)),
            "accelerator": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU",
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


def machine_line(facts: dict | None = None) -> str:
    """One line for a report: `facts` (default: this machine's) without the platform string."""
    facts = facts or machine()
    return (f"{facts['cpu']}, {facts['cores']} cores, {facts['accelerator']}; torch {facts['torch']} "
            f"({facts['torch_threads']} threads), transformers {facts['transformers']}, Python {facts['python']}")
