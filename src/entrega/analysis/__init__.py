"""Analysis: measure canary and stable (providers, I/O at the edge) and judge them (pure)."""
