"""The router's processes: a supervisor that holds the listening sockets and the route
table, and the workers that serve on them.

``router_supervisor.py`` starts and replaces the workers (``restarts.py`` paces a crash loop) and
sums what they count (``worker_metrics.py``); ``worker.py`` is one of them; ``link.py`` is
the private channel between the two, ``listeners.py`` binds the shared sockets, and
``lifecycle.py`` holds the steps of the start and the stop that do not depend on how
traffic is served.
"""
