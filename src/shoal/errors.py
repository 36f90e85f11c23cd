"""The exceptions shoal raises for problems a user can fix.

Every message names the bad value and says what to do about it; the CLI prints
the message alone (``Error: ...``) and the web app returns it as the error detail.
"""

from __future__ import annotations


class ShoalError(Exception):
    """Base class of every error caused by input a user can correct."""


class ConfigError(ShoalError, ValueError):
    """An option has a value outside what it accepts."""


class DatasetError(ShoalError):
    """A folder, list file or stored dataset cannot be used as a dataset."""


class NetworkError(ShoalError):
    """A network name, network file or pretrained weights cannot be used."""


class TrainingError(ShoalError):
    """A training run cannot start or continue."""


class BundleError(ShoalError):
    """A model bundle is missing, damaged or from an incompatible version."""


class NotFoundError(ShoalError, KeyError):
    """A named dataset or model is not in the store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class AlreadyExistsError(ShoalError):
    """A dataset or model of that name is already in the store."""


class InputError(ShoalError):
    """An image given for classification cannot be read."""


class NotTrainedError(ShoalError):
    """A classifier was used before it was trained or loaded."""


class CodeNotAllowedError(ShoalError):
    """Running a user's Python network file was needed but not allowed (see :mod:`shoal.trust`)."""
