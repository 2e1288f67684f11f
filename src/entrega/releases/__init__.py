"""Releases: immutable, content-addressed artifacts and their lifecycle."""
