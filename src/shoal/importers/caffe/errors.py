"""The one exception an import raises for what it cannot bring over faithfully."""

from __future__ import annotations

from shoal.errors import ShoalError


class CaffeError(ShoalError):
    """A Caffe or DIGITS model that shoal cannot import as it is; the message says what and why."""
