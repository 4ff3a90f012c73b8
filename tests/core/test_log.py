"""Tests of keel.core.log: formats, stdlib routing, secret redaction."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from keel.config import Secret
from keel.core.log import REDACTED, configure_logging, get_logger, redact_secrets


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_output_never_contains_secret_values() -> None:
    stream = io.StringIO()
    configure_logging(format="json", stream=stream)

    get_logger("keel.test").info(
        "connected",
        key=Secret("s3cr3t-value"),
        api_key="abc123",
        nested={"password": "hunter2", "items": [Secret("in-a-list")]},
    )

    output = stream.getvalue()
    for raw in ("s3cr3t-value", "abc123", "hunter2", "in-a-list"):
        assert raw not in output
    assert len(json_lines(stream)) == 1


def test_json_line_has_timestamp_level_event_and_logger() -> None:
    stream = io.StringIO()
    configure_logging(format="json", stream=stream)

    get_logger("keel.test").warning("bus_full", capacity=3)

    (line,) = json_lines(stream)
    assert {"timestamp", "level", "event", "logger", "capacity"} <= line.keys()
    assert line["level"] == "warning"
    assert line["logger"] == "keel.test"
    assert str(line["timestamp"]).endswith("Z")


def test_stdlib_loggers_use_the_same_format_and_redaction() -> None:
    stream = io.StringIO()
    configure_logging(format="json", stream=stream)

    logging.getLogger("third.party").warning("request %s", "sent", extra={"token": "tok-999"})

    (line,) = json_lines(stream)
    assert line["logger"] == "third.party"
    assert line["token"] == REDACTED
    assert "tok-999" not in stream.getvalue()


def test_auto_format_on_a_non_terminal_writes_json() -> None:
    stream = io.StringIO()
    configure_logging(format="auto", stream=stream)

    get_logger("keel.test").info("started")

    assert len(json_lines(stream)) == 1


def test_console_format_on_a_non_terminal_has_no_color_codes() -> None:
    stream = io.StringIO()
    configure_logging(format="console", stream=stream, level="DEBUG")

    get_logger("keel.test").debug("started", api_token="tok-123")

    output = stream.getvalue()
    assert output
    assert "\x1b[" not in output
    assert "tok-123" not in output


def test_level_filters_lower_events() -> None:
    stream = io.StringIO()
    configure_logging(level="WARNING", format="json", stream=stream)

    get_logger("keel.test").info("ignored")
    get_logger("keel.test").error("kept")

    assert [line["level"] for line in json_lines(stream)] == ["error"]


def test_configuring_twice_replaces_the_previous_stream() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(format="json", stream=first)
    configure_logging(format="json", stream=second)

    get_logger("keel.test").info("once")

    assert first.getvalue() == ""
    assert len(json_lines(second)) == 1


def test_unknown_level_is_rejected() -> None:
    with pytest.raises(ValueError):
        configure_logging(level="LOUD", stream=io.StringIO())


def test_redact_secrets_replaces_sensitive_values_and_keeps_none() -> None:
    event = {
        "event": "order",
        "X-MBX-APIKEY": "k",
        "listenKey": "lk",
        "signature": "sig",
        "api_secret": None,
        "params": ({"Password": "p"}, Secret("s")),
        "quantity": 3,
    }

    redacted = redact_secrets(None, "info", event)

    assert redacted == {
        "event": "order",
        "X-MBX-APIKEY": REDACTED,
        "listenKey": REDACTED,
        "signature": REDACTED,
        "api_secret": None,
        "params": [{"Password": REDACTED}, REDACTED],
        "quantity": 3,
    }


def test_uvicorns_colored_copy_of_a_message_is_not_written() -> None:
    stream = io.StringIO()
    configure_logging(format="json", stream=stream)

    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 42, extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"}
    )

    (line,) = json_lines(stream)
    assert "color_message" not in line
    assert "\x1b" not in stream.getvalue() and "\\u001b" not in stream.getvalue()
    assert line["event"] == "Started server process [42]"
