"""Running entrega's detached programs: one lifecycle (start, adopt, stop) for every host.

:mod:`entrega.runner.base` holds the interface and the lifecycle written once,
:mod:`entrega.runner.local` the implementation for this machine, :mod:`entrega.runner.pidfile`
how a program leaves its pid behind. Targets and routers start what they run through a
:class:`ProcessRunner`; a remote host gets a runner of its own beside ``local.py``.
"""

from entrega.runner.base import Finished, ProcessRunner, Program, Started
from entrega.runner.local import LocalRunner

__all__ = ["Finished", "LocalRunner", "ProcessRunner", "Program", "Started"]
