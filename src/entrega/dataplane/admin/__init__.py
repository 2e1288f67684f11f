"""How the router is driven and observed, off the request path.

``control.py`` is the control API on a unix socket (the controller's only way in);
``state.py`` persists the last route table it was given, so a restarted router serves it at
once; ``exposition.py`` serves the router's counters to Prometheus on an address of its
own.
"""
