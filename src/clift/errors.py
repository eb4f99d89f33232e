"""Exceptions raised by clift.

Every user-facing failure is one of these, and every message says what was received, what is
allowed, and what to change. The CLI prints the message alone (no traceback) and exits non-zero.
"""

from __future__ import annotations


class CliftError(Exception):
    """Base class of every error clift raises on purpose."""


class ConfigError(CliftError, ValueError):
    """A configuration value is unknown, mistyped or inconsistent.

    Args:
        problems: one message per problem; all of them are reported together.
    """

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            msg = self.problems[0]
        else:
            msg = f"{len(self.problems)} problems in the configuration:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(msg)


class RegistryError(CliftError, KeyError):
    """A name is not registered (method, model alias, benchmark)."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


class DataError(CliftError, ValueError):
    """A data file is missing or a record in it is malformed (the message names file and line)."""


class ModelLoadError(CliftError, RuntimeError):
    """A model could not be found or loaded."""


class TrainingError(CliftError, RuntimeError):
    """Training cannot continue (non-finite loss, out of memory)."""


class ResumeError(CliftError, RuntimeError):
    """An existing run directory cannot be resumed with the given configuration."""


class MethodStateError(ResumeError):
    """A method's checkpointed state does not fit the method.

    The message names the method, the offending key, what was expected there and the fix, so every
    method reports a bad state the same way.

    Args:
        method: the method's registered name (``gorp``, ``ewc``, …).
        key: where in the state the problem is (``bases.lora_A``, ``fisher``, ``<root>``).
        expected: what that key should hold.
        fix: what to change; by default, resume with the same method config or start over.
    """

    DEFAULT_FIX = "resume with the same method config, or rerun with --force to start the run over."

    def __init__(self, method: str, key: str, expected: str, fix: str | None = None) -> None:
        self.method, self.key, self.expected = method, key, expected
        self.fix = fix or self.DEFAULT_FIX
        super().__init__(f"{method} state, key {key!r}: expected {expected}; {self.fix}")
