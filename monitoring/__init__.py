"""Monitoring deployables: the payload collector (``python -m monitoring.collector``)."""
