"""Settings: .env.example lists every one; bad values fail naming the setting."""

from __future__ import annotations

import re

import pytest

from app.settings import Settings, SettingsError, load_settings
from tests.helpers import ROOT


def test_env_example_lists_every_setting_with_its_default() -> None:
    example = (ROOT / ".env.example").read_text()
    listed = dict(re.findall(r"^([A-Z_]+)=(.*)$", example, flags=re.MULTILINE))
    assert set(listed) == {name.upper() for name in Settings.model_fields}
    defaults = Settings.model_construct()
    for name, value in listed.items():
        default = getattr(defaults, name.lower())
        if hasattr(default, "get_secret_value"):
            default = default.get_secret_value()
        if isinstance(default, bool):
            default = str(default).lower()
        assert str(getattr(default, "value", default)) == value, name


def test_invalid_setting_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_PORT", "not-a-port")
    monkeypatch.setenv("RETRY_BASE", "0.5")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert "API_PORT" in str(error.value) and "RETRY_BASE" in str(error.value)


def test_production_refuses_an_empty_secret() -> None:
    with pytest.raises(SettingsError, match="API_KEY_SECRET"):
        load_settings(environment="production", api_key_secret="")
    assert (
        load_settings(environment="production", api_key_secret="s" * 32).environment == "production"
    )
