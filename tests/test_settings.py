"""Settings: defaults < TOML file < DMDS_* environment < flags; every setting documented."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dmds import settings
from dmds.cli.main import build_parser
from dmds.settings import ServeSettings, SyncMode

ROOT = Path(__file__).resolve().parent.parent


def test_layering(tmp_path: Path) -> None:
    config = tmp_path / "dmds.toml"
    config.write_text('[classic]\nmax_field_bytes = 100\nmax_text_bytes = 200\n[store]\nsync = "normal"\n')
    loaded = settings.load(
        ServeSettings,
        flags={"max_text_bytes": "300", "port": None},
        env={"DMDS_MAX_FIELD_BYTES": "150", "DMDS_MAX_TEXT_BYTES": "250", "DMDS_PORT": "7100"},
        config=config,
    )
    assert loaded.classic.max_field_bytes == 150  # env beats the file
    assert loaded.classic.max_text_bytes == 300  # flags beat env
    assert loaded.server.port == 7100
    assert loaded.store.sync is SyncMode.NORMAL  # from the file
    assert loaded.delivery == settings.DeliverySettings()  # defaults


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DMDS_PORT": "seventy"}, "port"),
        ({"DMDS_PORT": "70000"}, "port"),
        ({"DMDS_MAX_FIELD_BYTES": "0"}, "max_field_bytes"),
        ({"DMDS_SYNC": "sometimes"}, "sync"),
        ({"DMDS_REQUEST_TIMEOUT_S": "-1"}, "request_timeout_s"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings.load(ServeSettings, env=env)


def test_unknown_setting_in_file(tmp_path: Path) -> None:
    config = tmp_path / "dmds.toml"
    config.write_text("[classic]\nmax_feild_bytes = 1\n")
    with pytest.raises(ValueError, match="max_feild_bytes"):
        settings.load(ServeSettings, config=config)


def test_help_and_readme_list_every_setting() -> None:
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr,index]
    help_text = serve.format_help()
    for _, name, _, _ in settings.describe(ServeSettings):
        assert "--" + name.replace("_", "-") in help_text
    # The README's table is exactly the generated one (`python -m dmds.settings` prints it).
    assert settings.markdown_table(ServeSettings) in (ROOT / "README.md").read_text()


def test_bad_flag_value_exits_with_a_message(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dmds.cli.main", "serve", "--port", "notaport", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "port" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_stops_cleanly_on_signals(tmp_path: Path, sig: int) -> None:
    from tests.conftest import ServerProcess

    server = ServerProcess(tmp_path / "data", tmp_path / "log").start()
    assert server.stop(sig) == 0
    log = server.log()
    assert "stopped" in log
    assert "Traceback" not in log


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    from tests.conftest import ServerProcess

    first = ServerProcess(tmp_path / "a", tmp_path / "a.log").start()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "dmds.cli.main", "serve", "--host", "127.0.0.1", "--port", str(first.port),
             "--data-dir", str(tmp_path / "b")],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert proc.returncode == 1
        assert "cannot listen" in proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        first.stop()
