"""The exceptions shoal raises for problems a user can fix.

Every message names the bad value and says what to do about it; the CLI prints
the message alone (``Error: ...``) and the web app returns it as the error detail.
"""

from __future__ import annotations


class ShoalError(Exception):
    """Base class of every error caused by input a user can correct."""


class ConfigError(ShoalError, ValueError):
    """An option has a value outside what it accepts.

    ``options`` are the config fields the message names, in the order it names them; a
    front that calls them otherwise (the CLI's flags) words the message with :meth:`naming`.
    """

    def __init__(self, message: str, *, options: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.options = options

    def naming(self, names: dict[str, str]) -> str:
        """The message with the first mention of each of its options called as ``names`` says.

        >>> ConfigError("val_pct must be a number from 0 to 90, got 120", options=("val_pct",)).naming({"val_pct": "--val"})
        '--val must be a number from 0 to 90, got 120'
        """
        import re

        text = str(self)
        for option in self.options:
            if option in names:
                text = re.sub(rf"(?<![\w-]){re.escape(option)}(?![\w-])", lambda _: names[option], text, count=1)
        return text


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


class MissingExtraError(ShoalError):
    """A command needs an optional extra (``shoal[train]``, ``shoal[web]``...) that is not installed.

    ``extra`` is the extra's name, ``modules`` the missing modules it would install.
    """

    def __init__(self, extra: str, modules: tuple[str, ...], what: str) -> None:
        names = modules[0] + (" is" if len(modules) == 1 else f" and {len(modules) - 1} more are")
        super().__init__(f"{what} needs the [{extra}] extra ({names} not installed): "
                         f"pip install 'shoal[{extra}]'")
        self.extra = extra
        self.modules = modules


class StoreError(ShoalError):
    """The store (its index or an entry's files) is damaged; the message says what and how to repair it."""


class NoSpaceError(ShoalError):
    """The disk holding the store is full (``ENOSPC``); the message says where and how much is needed."""
