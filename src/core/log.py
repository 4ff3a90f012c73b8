"""Structured logging: one setup for structlog and the standard library.

Output is colored, readable console lines on a terminal and JSON lines
(``timestamp`` in ISO UTC, ``level``, ``event``, ``logger`` and the bound
keys) everywhere else. Standard-library loggers, including third-party ones,
are routed through the same processors, so every line has the same format.

Every event passes `redact_secrets`: a value that is a secret (anything with a
``reveal`` method, such as `keel.config.Secret`) or sits under a key whose
name suggests a credential is replaced by ``"**********"``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["REDACTED", "configure_logging", "get_logger", "redact_secrets"]

REDACTED = "**********"
# A key containing any of these (case-insensitive) holds a credential.
SENSITIVE_KEY_PARTS = (
    "secret",
    "token",
    "password",
    "api_key",
    "apikey",
    "signature",
    "listenkey",
)
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _KeelHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler `configure_logging` installs, so it can replace it."""


def configure_logging(
    level: str = "INFO",
    format: Literal["auto", "console", "json"] = "auto",
    stream: TextIO | None = None,
) -> None:
    """Route structlog and standard-library logging to one formatted stream.

    Calling it again replaces the previous setup.

    Parameters
    ----------
    level
        Lowest level written: ``"DEBUG"``, ``"INFO"``, ``"WARNING"``,
        ``"ERROR"`` or ``"CRITICAL"``.
    format
        ``"console"`` for readable lines (colored on a terminal), ``"json"``
        for one JSON object per line, ``"auto"`` for console on a terminal and
        JSON otherwise.
    stream
        Where to write; defaults to standard error.

    Raises
    ------
    ValueError
        If ``level`` or ``format`` is not one of the values above.
    """
    level = level.upper()
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    if format not in ("auto", "console", "json"):
        raise ValueError(f"unknown log format {format!r}; expected auto, console or json")
    stream = sys.stderr if stream is None else stream
    is_terminal = stream.isatty()
    use_json = format == "json" or (format == "auto" and not is_terminal)
    _install_handler(_formatter(use_json, colors=is_terminal), stream, level)
    # alembic narrates its set-up at INFO on every start (plugins, dialect, DDL mode); keel logs the migration itself.
    logging.getLogger("alembic").setLevel(level if level == "DEBUG" else "WARNING")
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """Return a structured logger named ``name`` (use the module's ``__name__``).

    Parameters
    ----------
    name
        Logger name, shown as ``logger`` in every line.

    Returns
    -------
    structlog.stdlib.BoundLogger
        A logger whose methods take an event name and key-value pairs.
    """
    return structlog.stdlib.get_logger(name)


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Replace secrets in an event, recursively, with ``"**********"``.

    A value is replaced when it has a ``reveal`` attribute (a secret type) or
    when its key contains one of `SENSITIVE_KEY_PARTS`; ``None`` stays
    ``None`` so a missing credential is still visible.

    Parameters
    ----------
    logger, method_name
        Unused; part of the structlog processor signature.
    event_dict
        The event to clean.

    Returns
    -------
    EventDict
        The cleaned event.
    """
    redacted: MutableMapping[str, Any] = _redact_mapping(event_dict)
    return redacted


def _redact_mapping(mapping: MutableMapping[str, Any]) -> Any:
    for key, value in mapping.items():
        if value is not None and _is_sensitive_key(key):
            mapping[key] = REDACTED
        else:
            mapping[key] = _redact_value(value)
    return mapping


def _redact_value(value: Any) -> Any:
    if hasattr(value, "reveal"):
        return REDACTED
    if isinstance(value, Mapping):
        return _redact_mapping(dict(value))
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(item) for item in value]
    return value


def _is_sensitive_key(key: object) -> bool:
    lowered = str(key).lower()
    return any(part in lowered for part in SENSITIVE_KEY_PARTS)


def _drop_color_message(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    event_dict.pop("color_message", None)
    return event_dict


def _shared_processors() -> list[Processor]:
    """Return the processors both structlog and standard-library events pass."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        redact_secrets,
    ]


def _formatter(use_json: bool, colors: bool) -> structlog.stdlib.ProcessorFormatter:
    renderer: Processor
    if use_json:
        renderer = structlog.processors.JSONRenderer()
        exception_processors: list[Processor] = [structlog.processors.format_exc_info]
    else:
        # Locals in tracebacks could show secrets: never render them.
        renderer = structlog.dev.ConsoleRenderer(
            colors=colors,
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False),
        )
        exception_processors = []
    return structlog.stdlib.ProcessorFormatter(
        # uvicorn adds a copy of each message with terminal color codes as an extra: keep only the plain one.
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), _drop_color_message, *_shared_processors()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *exception_processors,
            renderer,
        ],
    )


def _install_handler(formatter: logging.Formatter, stream: TextIO, level: str) -> None:
    """Replace the root handler installed by an earlier call, if any."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _KeelHandler)]:
        root.removeHandler(handler)
    handler = _KeelHandler(stream)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level)
