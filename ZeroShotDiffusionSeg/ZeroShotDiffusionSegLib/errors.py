"""Errors a user can act on.

Every layer raises ``UserError`` (or a subclass) for bad input or a missing
resource; the CLI, the worker and the server turn it into one line of text and a
non-zero exit / a 4xx answer, never a traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


class ModelLoadError(UserError):
    """The backbone could not be loaded (missing weights, offline hub, pickle-only checkpoint)."""


class Cancelled(Exception):
    """The run was cancelled by the user (Ctrl-C, SIGTERM, Cancel button, DELETE /jobs)."""

    exit_code = 130
