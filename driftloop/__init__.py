"""driftloop: keep a served model good as the world drifts away from its training data."""

__version__ = "0.1.0"
