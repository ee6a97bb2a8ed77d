"""Run a command and write its wall time, CPU time and peak RSS as JSON: ``_measure.py RESULT -- COMMAND...``.

The kernel counts a new process's peak RSS from the size of its parent at the
fork (its copy of the parent's memory). The benchmark itself holds boto3 and
the test servers' clients (~80 MB), so it starts each measured client through
this small process: the client's peak RSS is then its own.
"""

import json
import os
import sys
import time
from pathlib import Path

result_file, separator, *command = sys.argv[1:]
assert separator == "--" and command, __doc__
started = time.perf_counter()
child = os.fork()
if child == 0:
    try:
        os.execvp(command[0], command)
    finally:
        os._exit(127)
_pid, status, usage = os.wait4(child, 0)
wall = time.perf_counter() - started
with Path(result_file).open("w") as stream:
    json.dump({"exit_code": os.waitstatus_to_exitcode(status), "wall": wall,
               "cpu": usage.ru_utime + usage.ru_stime, "peak_rss": usage.ru_maxrss * 1024}, stream)  # fmt: skip
sys.exit(0)
