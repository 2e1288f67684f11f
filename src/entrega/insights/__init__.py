"""How each release did: per-release traffic sampled from the routers over its whole life
(``collector``), scorecards against the release it replaced (``scorecard``, ``report``),
DORA's four keys (``dora``) and entrega's own Prometheus metrics (``prometheus``).

The computations (``series``, ``scorecard``, ``dora``) are pure and table-tested; reads
of the store live in ``gather``; rendering in ``report`` and ``plots``.
"""
