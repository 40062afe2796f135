"""Settings precedence: defaults < settings file < GATEWAY_* env < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import SettingsError
from gateway.settings import load_settings


def test_each_layer_overrides_the_one_below(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            ) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("proxy: {host: 10.0.0.1, port: 7000}\nadmin: {port: 7001}\n"
                      "database_url: sqlite+aiosqlite:///file.db\nupstream_timeout: 5\n")
    monkeypatch.setenv("GATEWAY_PROXY__PORT", "7100")
    monkeypatch.setenv("GATEWAY_UPSTREAM_TIMEOUT", "9")
    settings = load_settings(config, database_url="sqlite+aiosqlite:///flag.db",
                             admin__host="0.0.0.0")
    assert (settings.proxy.host, settings.proxy.port) == ("10.0.0.1", 7100)  # file, env
    assert (settings.admin.host, settings.admin.port) == ("0.0.0.0", 7001)  # flag, file
    assert settings.database_url == "sqlite+aiosqlite:///flag.db"
    assert settings.upstream_timeout == 9


def test_a_partial_listener_keeps_its_own_default_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_ADMIN__HOST", "0.0.0.0")
    settings = load_settings(None)
    assert (settings.proxy.port, settings.admin.port) == (8080, 8081)


@pytest.mark.parametrize("text, message", [
    ("proxy: {port: 99999}\n", "port"),
    ("unknown_key: 1\n", "unknown_key"),
    ("agents: [{name: a, key_sha256: nothex}]\n", "key_sha256"),
    ("- a list\n", "a settings file is a mapping"),
    ("proxy: {port: [\n", "invalid YAML"),
])
def test_bad_settings_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=message):
        load_settings(config)


def test_a_missing_settings_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read settings file"):
        load_settings(tmp_path / "nope.yaml")
