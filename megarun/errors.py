"""The one error root of megarun: every user-facing failure is a MegarunError.

Each subclass carries the process exit code the CLI uses (see docs/cli.md):
2 for bad usage or bad input, 3 for an environment problem, 1 when work ran and failed.
"""

from __future__ import annotations


class MegarunError(Exception):
    """A failure with a message meant for the user. Never holds secrets."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class UsageError(MegarunError):
    """Bad options or arguments."""


class ConfigError(MegarunError):
    """A malformed or invalid configuration file; the message names the file and the key."""


class NotFoundError(MegarunError):
    """An unknown name (site, app, preset, job); the message lists the valid names."""


class IllegalTransition(MegarunError):
    """A state change the job state machine does not allow."""


class AreaNotFound(MegarunError):
    """No megarun.toml in the current directory or any parent."""


class EnvironmentProblem(MegarunError):
    """Something outside megarun failed: a busy database, a host, a scheduler, a full disk."""

    exit_code = 3


class DatabaseBusy(EnvironmentProblem):
    """The database stayed locked by another process for longer than the busy timeout."""


class AlreadyRunning(EnvironmentProblem):
    """Another megarun process holds the lock this one needs."""


class WorkFailed(MegarunError):
    """The work ran and something failed (exit code 1)."""

    exit_code = 1
