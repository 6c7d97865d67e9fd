"""Settings: precedence, type coercion, close-match errors and secret redaction."""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from ralm_es.config import (
    ConfigError,
    ConnectionSettings,
    Secret,
    compose,
    file_layer,
    from_dict,
    resolve_connection,
    set_layer,
    to_dict,
)
from ralm_es.es.client import ClusterUnavailable, connect
from ralm_es.inference.task import TaskSettings
from ralm_es.ingest import IngestSettings
from ralm_es.model.spec import ModelSettings
from ralm_es.retrieve.settings import RetrievalSettings, TuneSettings
from ralm_es.serve.settings import ServeSettings
from ralm_es.store.base import IndexSettings
from ralm_es.train.config import OptimSettings


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
    with pytest.raises(ConfigError, match=r"^RALM_ES_VERIFY_CERTS \(es\.verify_certs\): expected true or false"):
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


def test_a_value_a_settings_class_refuses_names_where_it_came_from(tmp_path: Path) -> None:
    """An unknown key named its file, a value out of range only the setting: which file, flag or --set gave it?"""
    tune, ingest = tmp_path / "tune.yaml", tmp_path / "ingest.yaml"
    tune.write_text("tune:\n  epochs: 0\n")
    ingest.write_text("ingest:\n  chunking:\n    overlap: -1\n")
    # A file section, --set, a nested file section, and a setting its class names with its section.
    cases = [
        (TuneSettings, file_layer(tune, "tune"), f"{tune}: tune.epochs must be at least 1, got 0"),
        (IngestSettings, set_layer(["chunking.overlap=-1"]), "--set chunking.overlap must not be negative, got -1"),
        (
            IngestSettings,
            file_layer(ingest, "ingest"),
            f"{ingest}: ingest.chunking.overlap must not be negative, got -1",
        ),
        (IngestSettings, set_layer(["encode_batch=0"]), "--set encode_batch must be at least 1, got 0"),
    ]
    for cls, layer, message in cases:
        with pytest.raises(ConfigError) as err:
            compose(cls, layer)
        assert str(err.value) == message


def test_unknown_key_lists_close_matches() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting 'optm'; did you mean optim"):
        from_dict(Outer, {"optm": {}})
    with pytest.raises(ConfigError, match=r"--set optim.stesp: unknown setting 'stesp'; did you mean steps"):
        compose(Outer, set_layer(["optim.stesp=3"]))


def test_overrides_parse_yaml_values() -> None:
    out = compose(Outer, set_layer(["optim.lr=5e-5", "optim.steps=3", "tags=[a, b]", "name=run1"]))
    assert out.optim.lr == 5e-5 and out.optim.steps == 3 and out.tags == ["a", "b"] and out.name == "run1"
    with pytest.raises(ConfigError, match="expected int"):
        compose(Outer, set_layer(["optim.steps=many"]))


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("es:\n  hosts: [a\n  user: b\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        resolve_connection({}, env={}, config_file=cfg)


def test_connection_defaults_are_safe() -> None:
    assert ConnectionSettings().verify_certs is True


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RALM_ES_URL": "localhost:9200"}, r"RALM_ES_URL \(es\.hosts\): expected a URL like http://localhost:9200"),
        ({"RALM_ES_URL": "http://ok:9200,ftp://x"}, r"RALM_ES_URL .*scheme http or https.*'ftp://x'"),
        ({"RALM_ES_URL": "http://h:99999"}, r"RALM_ES_URL .*'http://h:99999' \(Port out of range"),
        ({"RALM_ES_URL": "http://:9200"}, r"RALM_ES_URL .*with a host name"),
        ({"RALM_ES_URL": "http://h"}, r"RALM_ES_URL .*with a port 1-65535\), got 'http://h'"),
        ({"RALM_ES_URL": "http://h:9200,http://h:9200"}, r"^RALM_ES_URL \(es\.hosts\): 'http://h:9200' is given twice"),
        ({"RALM_ES_REQUEST_TIMEOUT": "-1"}, r"RALM_ES_REQUEST_TIMEOUT .*above 0, got -1\.0"),
        ({"RALM_ES_REQUEST_TIMEOUT": "nan"}, r"RALM_ES_REQUEST_TIMEOUT .*above 0, got nan"),
        ({"RALM_ES_REQUEST_TIMEOUT": "soon"}, r"RALM_ES_REQUEST_TIMEOUT \(es\.request_timeout\): expected float"),
        ({"RALM_ES_MAX_RETRIES": "-2"}, r"RALM_ES_MAX_RETRIES .*0 or more retries, got -2"),
        ({"RALM_ES_MAX_RETRIES": "2.5"}, r"RALM_ES_MAX_RETRIES \(es\.max_retries\): expected int"),
        ({"RALM_ES_CLOUD_ID": "garbage"}, r"RALM_ES_CLOUD_ID .*not an Elastic Cloud id"),
        ({"RALM_ES_USERNAME": "bob"}, r"RALM_ES_USERNAME .*without a password does nothing"),
        ({"RALM_ES_URL": "https://h:9200", "RALM_ES_CA_CERTS": "/no/such.crt"}, r"RALM_ES_CA_CERTS .*no such file"),
        (
            {"RALM_ES_URL": "https://a:9200,http://b:9200", "RALM_ES_CA_CERTS": __file__},
            r"RALM_ES_URL .*mixes http:// and https://",
        ),
    ],
)
def test_bad_connection_env_is_refused_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_connection({}, env=env)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://elastic:hunter2@h:99999", "'http://elastic:<redacted>@h:99999'"),
        ("ftp://elastic:hunter2@h:9200", "'ftp://elastic:<redacted>@h:9200'"),
        # An unencoded @ or / in the password: the client splits at the last @.
        ("ftp://elastic:hun@ter2@h:9200", "'ftp://elastic:<redacted>@h:9200'"),
        ("http://elastic:hun/ter2@h:9200", "'http://elastic:<redacted>@h:9200'"),
    ],
)
def test_a_password_in_a_url_never_shows_in_an_error(url: str, shown: str) -> None:
    with pytest.raises(ConfigError) as refused:
        resolve_connection({}, env={"RALM_ES_URL": url})
    assert shown in str(refused.value)
    assert "hun" not in str(refused.value) and "ter2" not in str(refused.value)


def test_https_without_a_port_is_the_clients_443() -> None:
    assert resolve_connection({}, env={"RALM_ES_URL": "https://deployment.es.example.cloud"}).hosts == [
        "https://deployment.es.example.cloud"
    ]


def test_a_password_in_a_url_never_shows_when_nothing_answers() -> None:
    settings = resolve_connection({}, env={"RALM_ES_URL": "http://elastic:hunter2@127.0.0.1:1"})
    with pytest.raises(ClusterUnavailable) as refused:
        connect(replace(settings, max_retries=0))
    assert "http://elastic:<redacted>@127.0.0.1:1" in str(refused.value) and "hunter2" not in str(refused.value)


def test_a_url_and_a_cloud_id_are_one_choice_made_by_the_later_source(tmp_path: Path) -> None:
    cloud = "deployment:" + base64.b64encode(b"example.com$abc$def").decode()
    flag_url = resolve_connection({"hosts": ("http://127.0.0.1:9200",)}, env={"RALM_ES_CLOUD_ID": cloud})
    assert flag_url.cloud_id is None and flag_url.hosts == ["http://127.0.0.1:9200"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("es:\n  hosts: [http://h:9200]\n")
    assert resolve_connection({}, env={"RALM_ES_CLOUD_ID": cloud}, config_file=cfg).cloud_id == cloud
    with pytest.raises(ConfigError, match=r"^RALM_ES_URL \(es\.hosts\) and RALM_ES_CLOUD_ID \(es\.cloud_id\): give"):
        resolve_connection({}, env={"RALM_ES_CLOUD_ID": cloud, "RALM_ES_URL": "http://h:9200"})
    # The URL that wins is checked as any other.
    with pytest.raises(ConfigError, match=r"^--es-url \(es\.hosts\): .*'ftp://x'"):
        resolve_connection({"hosts": ("ftp://x",)}, env={"RALM_ES_CLOUD_ID": cloud})


def test_bad_connection_flags_and_file_keys_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--es-timeout \(es\.request_timeout\): expected a number of seconds"):
        resolve_connection({"request_timeout": 0.0}, env={})
    with pytest.raises(ConfigError, match=r"^--es-url \(es\.hosts\): .*'nope'"):
        resolve_connection({"hosts": ("nope",)}, env={})
    cfg = tmp_path / "c.yaml"
    cfg.write_text("es:\n  max_retries: 1.5\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: es\.max_retries: expected int, got 1\.5"):
        resolve_connection({}, env={}, config_file=cfg)
    cfg.write_text("es:\n  request_timeout: -3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: es\.request_timeout: expected a number of seconds above 0"):
        resolve_connection({}, env={}, config_file=cfg)
    cfg.write_text("es:\n  hostz: [http://h:9200]\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: es: unknown setting 'hostz'; did you mean hosts"):
        resolve_connection({}, env={}, config_file=cfg)


def test_a_ca_bundle_with_an_http_url_is_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    env = {"RALM_ES_URL": "http://127.0.0.1:9200", "RALM_ES_CA_CERTS": "/whatever/ca.crt"}
    with caplog.at_level("WARNING"):
        settings = resolve_connection({}, env=env)
    assert settings.ca_certs is None and settings.hosts == ["http://127.0.0.1:9200"]
    assert [r.getMessage() for r in caplog.records] == [
        "RALM_ES_CA_CERTS (es.ca_certs): ignored, the Elasticsearch URL is http:// (no TLS)"
    ]
    https = resolve_connection({}, env={"RALM_ES_URL": "https://127.0.0.1:9200", "RALM_ES_CA_CERTS": __file__})
    assert https.ca_certs == __file__


def test_settings_built_in_code_fail_in_one_line_not_in_the_client() -> None:
    from ralm_es.es.client import build_client

    with pytest.raises(ConfigError, match=r"TLS options require scheme to be 'https'"):
        build_client(ConnectionSettings(hosts=["http://127.0.0.1:9200"], ca_certs=__file__))


def test_secrets_given_as_plain_strings_in_code_are_kept_secret() -> None:
    """A plain-string API key or password from the Python API crashed the client builder with an AttributeError."""
    from ralm_es.es.client import build_client

    settings = ConnectionSettings(hosts=["http://127.0.0.1:9200"], api_key="key-123", username="u", password="pw-456")
    assert settings.api_key == Secret("key-123") and settings.password == Secret("pw-456")
    assert "key-123" not in repr(settings) and "pw-456" not in repr(settings)
    assert build_client(settings) is not None


def test_a_password_without_a_username_names_the_flag_to_add() -> None:
    with pytest.raises(ConfigError, match=r"^RALM_ES_PASSWORD \(es\.password\): .* set --es-username, RALM_ES_USER"):
        resolve_connection({}, env={"RALM_ES_PASSWORD": "pw"})
    assert resolve_connection({"username": "bob"}, env={"RALM_ES_PASSWORD": "pw"}).username == "bob"


@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_a_bound_refuses_a_value_that_is_not_finite(value: float) -> None:
    # inf passes `value < 0` and nan passes every comparison; an infinite title boost times a zero score is nan.
    with pytest.raises(ConfigError, match=rf"^retrieval\.title_boost must be a finite number, got {value}$"):
        RetrievalSettings(title_boost=value)


@pytest.mark.parametrize(
    ("cls", "key", "expected"),
    [
        (RetrievalSettings, "retrieval.norm", "minmax, zscore"),
        (RetrievalSettings, "retrieval.exclude", "none, doc, content, doc+content"),
        (RetrievalSettings, "retrieval.texts", "fetch, inline"),
        (IndexSettings, "index.similarity", "cosine, dot_product, l2_norm, max_inner_product"),
        (IndexSettings, "index.index_type", "hnsw, int8_hnsw, int4_hnsw, bbq_hnsw, flat"),
        (IngestSettings, "ingest.runtime", "torch, torch-bf16, onnx, onnx-int8"),
        (ModelSettings, "model.fusion", "none, concat, attention, pair, scores"),
        (ModelSettings, "model.passage_encoder", "shared, frozen"),
        (ModelSettings, "model.passage_memory", "tokens, pooled"),
        (ModelSettings, "model.runtime", "torch, torch-bf16, onnx, onnx-int8"),
        (OptimSettings, "train.precision", "auto, fp32, bf16"),
        (TaskSettings, "task.type", "ner, classification"),
    ],
)
def test_settings_built_in_code_refuse_a_value_outside_their_choices(cls: type, key: str, expected: str) -> None:
    # The Python API skips the config layers, which check these too; the refusal names the setting the same way.
    with pytest.raises(ConfigError) as refused:
        cls(**{key.split(".")[1]: "zzz"})
    assert str(refused.value) == f"{key} must be one of {expected}, got 'zzz'"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_k", 0, "serve.max_k must be at least 1, got 0"),
        ("max_batch", 0, "serve.max_batch must be at least 1, got 0"),
        ("max_text_chars", -1, "serve.max_text_chars must be at least 1, got -1"),
        ("max_body_bytes", 0, "serve.max_body_bytes must be at least 1, got 0"),
        ("graceful_timeout", -1.0, "serve.graceful_timeout must not be negative, got -1.0"),
        ("port", 99999, "serve.port must be between 1 and 65535, got 99999"),
        ("port", 0, "serve.port must be between 1 and 65535, got 0"),
    ],
)
def test_serve_limits_built_in_code_or_read_from_a_file_are_checked(
    field: str, value: float, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        ServeSettings(**{field: value})
    config = tmp_path / "c.yaml"
    config.write_text(f"serve:\n  {field}: {value}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        compose(ServeSettings, file_layer(config, "serve"))
