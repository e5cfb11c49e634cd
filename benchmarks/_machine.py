"""The line every benchmark prints first: the machine, torch, threads and load."""

from __future__ import annotations

import os
import platform

import torch


def machine_line(details: str = "") -> str:
    """``machine: <cpu>, torch <version>, <n> thread(s); load (...)[; details]``.

    Examples
    --------
    >>> machine_line("seeds 0,1").startswith("machine: ")
    True
    """
    threads = torch.get_num_threads()
    line = (
        f"machine: {platform.processor() or platform.machine()}, torch"
        f" {torch.__version__}, {threads} thread{'s' if threads > 1 else ''};"
        f" load {tuple(round(value, 2) for value in os.getloadavg())}"
    )
    return f"{line}; {details}" if details else line
