"""CPU time of OS processes from /proc (Linux): what W10 reads to measure an idle node.

`/proc/PID/stat` fields 14 and 15 (utime, stime, in clock ticks of `SC_CLK_TCK`, usually 10 ms)
cover every thread of the process, dead ones included: the number WORKLOADS.md asks for. For
where the time goes, `/proc/PID/task/TID/schedstat` gives each thread's run time in nanoseconds.
"""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """utime + stime of process `pid` (all its threads), in clock ticks."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": the comm may hold spaces
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of the full line


def thread_ns(pid: int) -> dict[str, int]:
    """Run time of each live thread of `pid` in ns, keyed "main" (the loop) or "tid <TID>"."""
    result: dict[str, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return result
    for tid in tids:
        try:
            run_ns = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        result["main" if int(tid) == pid else f"tid {tid}"] = run_ns
    return result


def percent_of_core(ticks: int, wall_s: float) -> float:
    """CPU ticks over a wall-clock window as percent of one core."""
    return 100.0 * ticks / CLK_TCK / wall_s
