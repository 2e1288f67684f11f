"""The ssh target's transport: a fleet of hosts reached over SSH (asyncssh).

asyncssh is an optional extra (``pip install 'entrega[ssh]'``) imported only inside this
package. What is here so far is the ground a later ssh target (a host agent, instances on
hosts) builds on:

- :mod:`.connections`: :class:`Host`, :class:`Fleet` (one pooled connection per host,
  host keys checked against known_hosts, timeouts on every call, ``max_parallel``);
- :mod:`.transfer`: releases put onto hosts by content, sent once, checked on the host;
- :mod:`.checks`: what ``entrega host check`` reports of each host;
- :mod:`.settings`: a Fleet from entrega.yaml's ``target: {kind: ssh}``;
- :mod:`.hostside`: the standard-library helper those steps run on a host.

Importing this package without asyncssh installed raises a TargetError that names the
``pip install`` to run.
"""

from __future__ import annotations

try:
    import asyncssh  # noqa: F401
except ImportError:  # pragma: no cover - depends on the installed extras
    from entrega.errors import TargetError

    raise TargetError("the ssh target needs asyncssh, which is not installed",
                      hint="pip install 'entrega[ssh]'") from None

from entrega.targets.ssh.checks import HostCheck, check_hosts
from entrega.targets.ssh.connections import (
    CommandResult,
    Fleet,
    FleetSettings,
    Host,
    HostOutcome,
)
from entrega.targets.ssh.settings import fleet_from_config, ssh_target_of
from entrega.targets.ssh.transfer import SyncResult, prune_releases, sync_release

__all__ = ["CommandResult", "Fleet", "FleetSettings", "Host", "HostCheck", "HostOutcome",
           "SyncResult", "check_hosts", "fleet_from_config", "prune_releases",
           "ssh_target_of", "sync_release"]
