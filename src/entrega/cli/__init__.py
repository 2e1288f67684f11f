"""The `entrega` command line: a client of the server's API, like kubectl to its API server."""
