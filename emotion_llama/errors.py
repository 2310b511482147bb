"""Errors a user can cause and fix; their message is one sentence saying what and how."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or setup; command-line tools print it without a traceback."""


class WeightsNotFoundError(UserError, FileNotFoundError):
    """A configured weights file or folder does not exist."""

    def __init__(self, what: str, path: object, config_key: str):
        super().__init__(
            f"{what} weights not found at {path!s}: download them and set {config_key}=/path/to/them"
        )
        self.path = path
        self.config_key = config_key


class MediaError(UserError):
    """A video or audio file that cannot be used (missing, corrupt, empty, unsupported)."""

    def __init__(self, path: object, reason: str):
        super().__init__(f"{path!s}: {reason}")
        self.path = path
        self.reason = reason
