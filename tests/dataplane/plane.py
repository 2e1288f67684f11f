"""A :class:`DataPlane` over one in-process :class:`Proxy`, so tests drive the router's
control API without starting its supervisor and workers."""

from __future__ import annotations

from entrega.dataplane.http.proxy import Proxy
from entrega.dataplane.routes import Routes


class ProxyPlane:
    """The control API's view of a single proxy (what a supervisor's workers add up to)."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    def health(self) -> dict[str, object]:
        return {}

    async def routes(self) -> dict[str, object]:
        data = self.proxy.table.routes.to_dict()
        data["draining"] = self.proxy.draining()
        return data

    async def apply(self, routes: Routes) -> None:
        self.proxy.apply(routes)

    async def metrics(self) -> dict[str, object]:
        return self.proxy.metrics.to_dict()

    async def connections(self) -> int:
        return len(self.proxy.clients)
