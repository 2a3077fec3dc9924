"""Errors a user can act on. Every user-facing failure is one of these: one line, exit 1.

Hierarchy::

    DriftloopError (Exception)
    ├── ConfigError (ValueError)          bad settings, spec or rules file
    ├── DataError (ValueError)            a dataset, window or log batch that cannot be used
    │   └── ValidationFailed              the validation gate rejected a batch (has a report)
    ├── StoreError (OSError)              the object store cannot be reached or written
    │   └── NotFound (KeyError-like)      a key, model, version or alias that does not exist
    ├── IntegrityError (ValueError)       a file whose sha256 does not match its manifest
    ├── RegistryError (RuntimeError)      a registry operation that is not allowed
    ├── DeployError (RuntimeError)        the cluster did not serve a version (canary failed)
    └── InvalidRequest (ValueError)       an inference request that cannot be served (a 4xx)
"""

from __future__ import annotations


class DriftloopError(Exception):
    """Root of every error driftloop raises on purpose."""


class ConfigError(DriftloopError, ValueError):
    """Settings, a dataset spec or a rules file is invalid."""


class DataError(DriftloopError, ValueError):
    """Data cannot be used: missing file, unknown column, wrong type, empty window..."""


class ValidationFailed(DataError):
    """The validation gate rejected a batch. ``report`` is the Markdown data-quality report."""

    def __init__(self, message: str, report: str = "") -> None:
        super().__init__(message)
        self.report = report


class StoreError(DriftloopError, OSError):
    """The object store cannot be reached, read or written."""


class NotFound(StoreError):
    """A key, model, version or alias does not exist."""


class IntegrityError(DriftloopError, ValueError):
    """A stored file does not match the sha256 recorded in its manifest."""


class RegistryError(DriftloopError, RuntimeError):
    """A registry operation that is not allowed (e.g. promoting an uncommitted version)."""


class DeployError(DriftloopError, RuntimeError):
    """The cluster did not serve the version (canary failed or timed out, API error)."""


class InvalidRequest(DriftloopError, ValueError):
    """An inference request that cannot be served; maps to HTTP 400."""
