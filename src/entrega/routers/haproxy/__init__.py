"""HAProxy (from the distribution) as entrega's data plane, driven by its runtime API.

render.py writes the configuration and maps; runtime.py speaks the admin socket;
router.py is the ``Router`` the controller uses; on_host.py is the same router for an
HAProxy on a fleet host (kept by the host agent, its sockets reached over SSH).
"""

from entrega.routers.haproxy.router import HaproxyRouter

__all__ = ["HaproxyRouter"]
