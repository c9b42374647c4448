"""One exception root for the package, subclasses grouped by kind.

Foreign errors are translated at the boundary (``raise ProviderError(...) from exc``)
so callers only ever need to catch :class:`FivenineError`.
"""

from __future__ import annotations

from dataclasses import dataclass


class FivenineError(Exception):
    """Root of every error fivenines raises on purpose."""


@dataclass(frozen=True)
class FieldError:
    """One problem in a spec: where it is (dotted field path) and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(FivenineError):
    """A spec file is unreadable or invalid. Carries every problem found, with its field path."""

    def __init__(self, file: str, errors: list[FieldError]) -> None:
        self.file = file
        self.errors = errors
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.file}: {e}" for e in self.errors]
        return "\n".join(lines)


class ConfigError(FivenineError):
    """A runtime configuration problem detected before anything starts (e.g. a port in use)."""


class ProviderError(FivenineError):
    """A provider (local processes, AWS) failed to carry out an action."""


class ProxyError(FivenineError):
    """The data plane failed in a way a caller should know about."""


class InvalidTransition(FivenineError):
    """A pure state machine got an input it has no rule for in its current state."""
