"""Metric providers: raw measurements only; judging happens in entrega.analysis.judges."""
