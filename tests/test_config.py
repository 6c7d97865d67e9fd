"""Settings: precedence, type coercion, close-match errors and secret redaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ralm_es.config import (
    ConfigError,
    ConnectionSettings,
    Secret,
    apply_overrides,
    from_dict,
    resolve_connection,
    to_dict,
)


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("es:\n  hosts: [http://file:9200]\n  username: fileuser\n  request_timeout: 5\n")
    env = {"RALM_ES_URL": "http://env:9200", "RALM_ES_PASSWORD": "s3cret"}
    settings = resolve_connection({"hosts": ("http://cli:9200",)}, env=env, config_file=cfg)
    assert settings.hosts == ["http://cli:9200"]
    assert settings.username == "fileuser"
    assert settings.request_timeout == 5.0
    assert settings.password == Secret("s3cret")
    only_env = resolve_connection({}, env=env, config_file=cfg)
    assert only_env.hosts == ["http://env:9200"]
    assert resolve_connection({}, env={}).hosts == ["http://localhost:9200"]


def test_secrets_never_printed() -> None:
    settings = resolve_connection({}, env={"RALM_ES_API_KEY": "topsecretkey", "RALM_ES_PASSWORD": "pw-123"})
    for text in (repr(settings), str(settings), f"{settings}", str(to_dict(settings))):
        assert "topsecretkey" not in text and "pw-123" not in text
    assert settings.api_key is not None and settings.api_key.reveal() == "topsecretkey"
    assert to_dict(settings, redact=False)["api_key"] == "topsecretkey"


def test_env_booleans_and_numbers() -> None:
    settings = resolve_connection({}, env={"RALM_ES_VERIFY_CERTS": "false", "RALM_ES_MAX_RETRIES": "7"})
    assert settings.verify_certs is False and settings.max_retries == 7
    with pytest.raises(ConfigError, match=r"es\.verify_certs: expected true or false"):
        resolve_connection({}, env={"RALM_ES_VERIFY_CERTS": "maybe"})


@dataclass
class Inner:
    lr: float = 1e-3
    steps: int = 10


@dataclass
class Outer:
    name: str = "x"
    optim: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)


def test_unknown_key_lists_close_matches() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting 'optm'; did you mean optim"):
        from_dict(Outer, {"optm": {}})
    with pytest.raises(ConfigError, match=r"--set optim.stesp: unknown setting 'stesp'; did you mean steps"):
        apply_overrides(Outer(), ["optim.stesp=3"])


def test_overrides_parse_yaml_values() -> None:
    out = apply_overrides(Outer(), ["optim.lr=5e-5", "optim.steps=3", "tags=[a, b]", "name=run1"])
    assert out.optim.lr == 5e-5 and out.optim.steps == 3 and out.tags == ["a", "b"] and out.name == "run1"
    with pytest.raises(ConfigError, match="expected int"):
        apply_overrides(Outer(), ["optim.steps=many"])


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("es:\n  hosts: [a\n  user: b\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        resolve_connection({}, env={}, config_file=cfg)


def test_connection_defaults_are_safe() -> None:
    assert ConnectionSettings().verify_certs is True
