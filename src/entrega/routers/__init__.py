"""Routers: how traffic reaches instances and how it is split between releases."""
