"""The environment of every process entrega starts: nothing of the controller's unless named.

The controller's environment holds its secrets: the CI webhook's HMAC secret, database
URLs, cloud credentials. The processes it starts (app instances, their supervisors, the
embedded router, HAProxy) outlive it, and anyone who can read ``/proc/<pid>/environ`` of
one of them (the app's own user, a debugging tool, a crash reporter) would read those
secrets too. So none of them inherits the controller's environment: each gets the
minimal one built here, plus what its caller adds on purpose.

- :data:`BASE_VARIABLES` (``PATH``, ``HOME``, ``LANG``) keep their values: without them a
  shell line cannot find its programs, and tools that write to ``~`` or decode text break.
  None of them is a secret.
- An app instance also gets ``run.env``, the ``ENTREGA_*`` variables and ``PORT`` set by
  the target, and the controller's variables named in ``run.inherit_env`` (nothing else).
- entrega's own data-plane programs (the router, the instance supervisor) are Python
  programs started with the controller's interpreter: they also keep
  :data:`PYTHON_VARIABLES`, so they import the same entrega and the same router build.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

#: What any program needs to run: where commands are, a home, a locale.
BASE_VARIABLES = ("PATH", "HOME", "LANG")
#: What a Python data-plane program needs to import the same entrega as the controller.
PYTHON_VARIABLES = ("PYTHONPATH", "ENTREGA_PURE_PYTHON")
#: PATH when the controller has none (started from a bare service manager).
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def minimal_env(*, inherit: Iterable[str] = (),
                source: Mapping[str, str] | None = None) -> dict[str, str]:
    """PATH, HOME and LANG from ``source`` (default: this process's environment), plus the
    variables named in ``inherit`` that ``source`` has. Nothing else."""
    source = os.environ if source is None else source
    env = {name: source[name] for name in (*BASE_VARIABLES, *inherit) if name in source}
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def data_plane_env(source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of entrega's own detached programs (router, instance supervisor)."""
    return minimal_env(inherit=PYTHON_VARIABLES, source=source)
