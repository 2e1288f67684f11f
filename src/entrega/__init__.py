"""entrega: continuous delivery for network services.

After CI has built and tested a change, entrega deploys it, verifies it, releases it
gradually (canary or blue-green), watches real traffic, rolls back by itself when the new
version is worse, and reports how each release did.
"""

__version__ = "0.1.0"
