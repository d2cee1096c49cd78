"""Settings: .env.example lists every one; bad values fail naming the setting; any setting may
come from a file (`<NAME>_FILE`); only the commands that hash keys need API_KEY_SECRET."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.cli import main
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


def test_production_refuses_an_empty_secret_where_keys_are_hashed() -> None:
    # The settings load (the fleet, the duties and the migrations need no secret) ...
    settings = load_settings(environment="production", api_key_secret="")
    # ... but hashing a key with them is refused, naming the setting.
    with pytest.raises(SettingsError, match="API_KEY_SECRET"):
        settings.require_api_key_secret()
    with pytest.raises(SettingsError, match="API_KEY_SECRET"):
        _ = settings.hashing_secret
    with pytest.raises(SettingsError, match="API_KEY_SECRET"):
        load_settings(environment="production", api_key_secret="s" * 15).require_api_key_secret()
    strong = load_settings(environment="production", api_key_secret="s" * 16)
    strong.require_api_key_secret()
    assert strong.hashing_secret == b"s" * 16
    # Outside production an empty secret falls back to the public development one.
    assert load_settings(environment="test", api_key_secret="").hashing_secret


@pytest.mark.parametrize("command", [["keys", "list"], ["api"], ["dev", "--help"]])
def test_the_commands_that_hash_keys_refuse_to_start_without_a_secret(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("API_KEY_SECRET", "")
    assert main(command) == 2
    assert "API_KEY_SECRET" in capsys.readouterr().err


def test_migrate_needs_no_secret_in_production(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("API_KEY_SECRET", "")
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    assert main(["migrate"]) == 0
    assert "migrated" in capsys.readouterr().out


@pytest.fixture
def bare_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting, and no setting's file, in the environment (the suite's runner sets some)."""
    for name in Settings.model_fields:
        for variable in (name.upper(), f"{name.upper()}_FILE"):
            monkeypatch.delenv(variable, raising=False)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.usefixtures("bare_environment")
def test_a_setting_can_be_read_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As Docker mounts secrets: the value, then a newline (echo, editors), which is dropped.
    monkeypatch.setenv(
        "API_KEY_SECRET_FILE", write(tmp_path / "secret", "s3cret-of-32-characters-long!!!!\n")
    )
    monkeypatch.setenv(
        "DATABASE_URL_FILE", write(tmp_path / "url", "postgresql://app:pw@db/jf\r\n")
    )
    # Any setting, not only secrets; names are case-insensitive, like the settings themselves.
    monkeypatch.setenv("worker_threads_file", write(tmp_path / "threads", "7\n"))
    monkeypatch.setenv("REDIS_URL_FILE", "")  # empty: not given, as in the official images
    settings = load_settings(environment="production")
    assert settings.api_key_secret.get_secret_value() == "s3cret-of-32-characters-long!!!!"
    assert settings.database_url == "postgresql://app:pw@db/jf"
    assert settings.worker_threads == 7
    assert settings.redis_url == Settings.model_fields["redis_url"].default
    settings.require_api_key_secret()
    # A value given in code wins, and its file is not read.
    assert load_settings(worker_threads=3).worker_threads == 3
    # A bad value from a file fails like a bad value from the environment, naming the setting.
    monkeypatch.setenv("worker_threads_file", write(tmp_path / "threads", "many\n"))
    with pytest.raises(SettingsError, match="WORKER_THREADS"):
        load_settings()


@pytest.mark.usefixtures("bare_environment")
def test_a_setting_and_its_file_together_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_KEY_SECRET", "from-the-environment-directly")
    monkeypatch.setenv(
        "API_KEY_SECRET_FILE", write(tmp_path / "secret", "from-a-file-of-its-own\n")
    )
    with pytest.raises(SettingsError) as error:
        load_settings()
    message = str(error.value)
    assert "API_KEY_SECRET and API_KEY_SECRET_FILE are both given" in message
    assert "from-" not in message  # never the secret itself


@pytest.mark.usefixtures("bare_environment")
def test_an_unreadable_file_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-such-secret"
    monkeypatch.setenv("DATABASE_URL_FILE", str(missing))
    with pytest.raises(
        SettingsError, match=re.escape(f"DATABASE_URL_FILE: cannot read {missing}: No such")
    ):
        load_settings()
    monkeypatch.setenv("DATABASE_URL_FILE", str(tmp_path))  # a directory
    with pytest.raises(SettingsError, match="DATABASE_URL_FILE: cannot read"):
        load_settings()
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    monkeypatch.setenv("DATABASE_URL_FILE", str(binary))
    with pytest.raises(SettingsError, match="DATABASE_URL_FILE: cannot read"):
        load_settings()


@pytest.mark.usefixtures("bare_environment")
def test_the_environment_wins_over_dotenv_for_a_setting_and_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = write(tmp_path / "secret", "secret-read-from-a-file-0123\n")
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"API_KEY_SECRET_FILE={secret}\nLOG_LEVEL_FILE={tmp_path / 'none'}\n")
    # .env alone: its file is read.
    settings = load_settings(_env_file=dotenv, log_level="INFO")
    assert settings.api_key_secret.get_secret_value() == "secret-read-from-a-file-0123"
    # The environment's value wins over .env's file (which is then not read at all).
    monkeypatch.setenv("API_KEY_SECRET", "secret-from-the-environment")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    settings = load_settings(_env_file=dotenv)
    assert settings.api_key_secret.get_secret_value() == "secret-from-the-environment"
    assert settings.log_level == "DEBUG"
    # The environment's file wins over .env's value.
    monkeypatch.delenv("API_KEY_SECRET")
    monkeypatch.setenv("API_KEY_SECRET_FILE", secret)
    dotenv.write_text("API_KEY_SECRET=secret-in-dotenv\n")
    settings = load_settings(_env_file=dotenv)
    assert settings.api_key_secret.get_secret_value() == "secret-read-from-a-file-0123"
    # Both in .env: refused, saying where.
    monkeypatch.delenv("API_KEY_SECRET_FILE")
    dotenv.write_text(f"API_KEY_SECRET=x\nAPI_KEY_SECRET_FILE={secret}\n")
    with pytest.raises(SettingsError, match=r"both given in \.env"):
        load_settings(_env_file=dotenv)
