"""Typed errors, named for what the caller should do about them.

The classes say how to react (retry later, ask an operator, give up on the
request, resolve an ambiguous outcome, fix the input), not where the failure
came from. Venue-specific detail such as a Binance error code travels as data.
"""

from __future__ import annotations

import functools
from typing import Any, Self


class KeelError(Exception):
    """Base class of every error keel raises on purpose.

    Every one crosses a process boundary whole (a tuning worker's, a fit
    worker's): it pickles as the call that built it, whatever arguments its
    class's constructor takes.
    """

    _arguments: tuple[tuple[Any, ...], dict[str, Any]]

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        error = super().__new__(cls, *args)
        error._arguments = (args, kwargs)
        return error

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        args, kwargs = self._arguments
        return (functools.partial(type(self), **kwargs) if kwargs else type(self)), args


class RetryLaterError(KeelError):
    """A transient failure: the same request may succeed if retried later.

    Parameters
    ----------
    message
        What failed.
    retry_after_seconds
        The earliest sensible retry delay, when the source said one.
    """

    def __init__(self, message: str, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class OperatorActionRequiredError(KeelError):
    """The system cannot continue safely without a human decision."""


class RequestRejectedError(KeelError):
    """A definitive refusal: resending the same request fails the same way.

    Parameters
    ----------
    message
        Why the request was refused.
    code
        The venue's error code (Binance's negative integers), when there is one.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class RiskRefusedError(KeelError):
    """The risk layer refused an order placed by hand: change the order, or the limit or state it names, then resend."""


class AmbiguousOutcomeError(KeelError):
    """The request may or may not have taken effect: query before acting again."""


class InvalidTransitionError(KeelError):
    """A state machine was asked to make a move its transition table forbids."""


class ConfigurationError(KeelError):
    """A configuration value is invalid: fix the named file and key, then restart.

    Parameters
    ----------
    file
        The file that set the bad value (or ``"environment"``).
    key
        The dotted key path of the bad value.
    problem
        What is wrong with it.
    """

    def __init__(self, file: str, key: str, problem: str) -> None:
        super().__init__(f"{file}: {key}: {problem}")
        self.file = file
        self.key = key
        self.problem = problem


class MalformedDataError(KeelError):
    """Input data cannot be used as it is: fix or replace the named source."""
