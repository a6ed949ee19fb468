"""The JSON log format on real records: exceptions, extras, and what JSON cannot hold."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from dmds import settings
from dmds.cli.logs import JsonFormatter, formatter
from dmds.settings import LogFormat, ServeSettings


def record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    info = sys.exc_info() if exc else None
    rec = logging.LogRecord("dmds.test", logging.ERROR, __file__, 1, msg, args, info)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_an_exception_is_one_line_with_its_traceback() -> None:
    try:
        raise ValueError("broken\non two lines")
    except ValueError:
        line = JsonFormatter().format(record("bug while serving %s", "SEND", exc=True))
    assert "\n" not in line
    out = json.loads(line)
    assert out["message"] == "bug while serving SEND"
    assert out["level"] == "ERROR"
    assert out["logger"] == "dmds.test"
    assert out["exc"].startswith("Traceback (most recent call last):")
    assert out["exc"].endswith("ValueError: broken\non two lines")


def test_extras_are_fields_and_what_json_cannot_hold_is_text() -> None:
    out = json.loads(
        JsonFormatter().format(record("x", alias="juan", count=3, path=Path("/d"), peer=("h", 1)))
    )
    assert (out["alias"], out["count"], out["path"], out["peer"]) == ("juan", 3, "/d", "('h', 1)")
    assert "exc" not in out
    assert "args" not in out  # the standard attributes stay out


def test_text_is_todays_format() -> None:
    line = formatter("text").format(record("hello %s", "world"))
    assert line.endswith(" ERROR dmds.test: hello world")


def test_log_format_is_a_setting_like_the_others(tmp_path: Path) -> None:
    config = tmp_path / "dmds.toml"
    config.write_text('[server]\nlog_format = "json"\n')
    assert settings.load(ServeSettings, config=config).server.log_format is LogFormat.JSON
    env = {"DMDS_LOG_FORMAT": "json"}
    assert settings.load(ServeSettings, env=env).server.log_format is LogFormat.JSON
    assert (
        settings.load(ServeSettings, env=env, flags={"log_format": "text"}).server.log_format
        is LogFormat.TEXT
    )
    with pytest.raises(ValueError, match="log_format"):
        settings.load(ServeSettings, env={"DMDS_LOG_FORMAT": "xml"})


def test_in_json_mode_an_uncaught_exception_is_a_json_record_too() -> None:
    code = (
        "from dmds.cli.main import _setup_logging; _setup_logging('INFO', 'json'); raise RuntimeError('boom')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, check=False)
    assert done.returncode == 1
    (line,) = done.stderr.decode().splitlines()
    out = json.loads(line)
    assert (out["level"], out["message"]) == ("CRITICAL", "uncaught exception")
    assert out["exc"].endswith("RuntimeError: boom")
