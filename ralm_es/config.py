"""Typed settings: dataclasses loaded from YAML, environment and CLI, with secrets kept out of output.

Every settings tree in ralm-es (connection, ingest, retrieval, serving, training) is a dataclass, its sections
dataclasses too. ``compose`` builds one from its defaults and layers of sources in order (a config file section,
the environment, command-line flags, ``--set a.b=value``), with errors that name the source of a bad value and
the close matches of an unknown key; ``to_dict`` dumps settings back with secrets redacted.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from elastic_transport.client_utils import parse_cloud_id

from ralm_es.errors import RalmError

T = TypeVar("T")
REDACTED = "<redacted>"
log = logging.getLogger(__name__)


def cache_home() -> Path:
    """Per-user home for ralm-es's caches, checkpoints, local indices and nodes (``RALM_ES_HOME``, else
    ``~/.cache/ralm-es``)."""
    return Path(os.environ.get("RALM_ES_HOME") or Path.home() / ".cache" / "ralm-es")


class ConfigError(RalmError, ValueError):
    """A setting that is unknown, of the wrong type, or unreadable; the message names where."""


def check_bounds(section: str, settings: object, names: Iterable[str], low: Literal[0, 1]) -> None:
    """Refuse a setting of ``settings`` below ``low`` (1: a size; 0: a count or weight) or not finite (``inf``
    or ``nan`` pass a plain comparison), naming ``section.name``."""
    for name in names:
        value = getattr(settings, name)
        if not math.isfinite(value):
            raise ConfigError(f"{section}.{name} must be a finite number, got {value}")
        if value < low:
            bound = "must be at least 1" if low else "must not be negative"
            raise ConfigError(f"{section}.{name} {bound}, got {value}")


def check_choices(section: str, settings: object, names: Iterable[str]) -> None:
    """Refuse a ``Literal`` setting of ``settings`` outside its values, naming ``section.name``: settings built in
    code skip the config layers' check."""
    hints = typing.get_type_hints(type(settings))
    for name in names:
        allowed = typing.get_args(hints[name])
        if (value := getattr(settings, name)) not in allowed:
            raise ConfigError(f"{section}.{name} must be one of {', '.join(map(str, allowed))}, got {value!r}")


class Secret:
    """A secret string: repr, str and format never show it; ``reveal()`` returns it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __format__(self, spec: str) -> str:
        return REDACTED


@dataclasses.dataclass
class ConnectionSettings:
    """How to reach Elasticsearch. Resolved from CLI flags, then environment, then a config file."""

    hosts: list[str] = dataclasses.field(default_factory=lambda: ["http://localhost:9200"])
    cloud_id: str | None = None
    api_key: Secret | None = None
    username: str | None = None
    password: Secret | None = None
    ca_certs: str | None = None
    verify_certs: bool = True
    request_timeout: float = 30.0
    max_retries: int = 3
    retry_on_timeout: bool = True

    def __post_init__(self) -> None:
        # Settings built in code may give a secret as a plain string: kept as a Secret, so it is never shown.
        for name in ("api_key", "password"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, Secret(value))


# Environment variable -> ConnectionSettings field.
CONNECTION_ENV = {
    "RALM_ES_URL": "hosts",
    "RALM_ES_CLOUD_ID": "cloud_id",
    "RALM_ES_API_KEY": "api_key",
    "RALM_ES_USERNAME": "username",
    "RALM_ES_PASSWORD": "password",
    "RALM_ES_CA_CERTS": "ca_certs",
    "RALM_ES_VERIFY_CERTS": "verify_certs",
    "RALM_ES_REQUEST_TIMEOUT": "request_timeout",
    "RALM_ES_MAX_RETRIES": "max_retries",
}

# ConnectionSettings field -> the command-line flag that sets it (errors name the flag).
CONNECTION_FLAGS = {
    "hosts": "--es-url",
    "username": "--es-username",
    "ca_certs": "--es-ca-certs",
    "verify_certs": "--es-verify-certs",
    "request_timeout": "--es-timeout",
    "max_retries": "--es-retries",
}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; errors name the file (and line, for syntax errors)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _unknown_key(key: str, known: Iterable[str], where: str, leaves: Iterable[str] = ()) -> ConfigError:
    known = sorted(known)
    # A key of a sub-section given at the wrong level (``bulk_docs`` for ``bulk.docs``) is pointed to its place.
    moved = [leaf for leaf in leaves if leaf.replace(".", "_") == key or leaf.rpartition(".")[2] == key]
    close = moved or difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys: {', '.join(known)}"
    return ConfigError(f"{where}: unknown setting '{key}'{hint}")


def _leaves(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key below ``cls`` that is a value, not a section."""
    out = []
    for name, hint in typing.get_type_hints(cls).items():
        out += _leaves(hint, f"{prefix}{name}.") if dataclasses.is_dataclass(hint) else [f"{prefix}{name}"]
    return out


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert a YAML/env/CLI value to the annotated type, or raise naming the setting."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            return None
        return _coerce(value, args[0], where)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(hint, value, where)
    if hint is Secret:
        return Secret(str(value))
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        # int(2.5) would silently drop the fraction.
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{where}: expected int, got {value!r}")
        try:
            return hint(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}") from exc
    if hint is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return str(value)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{where}: expected one of {', '.join(map(str, allowed))}, got {value!r}")
        return value
    return value


@dataclasses.dataclass(frozen=True)
class Layer:
    """One source of settings: a mapping whose keys are setting names, dotted (``bulk.docs``) or nested as in a
    YAML section. ``name(key)`` says where a value came from, ``scope(key)`` where an unknown key was found; errors
    quote them."""

    values: Mapping[str, Any]
    name: Callable[[str], str]
    scope: Callable[[str], str]


def mapping_layer(values: Mapping[str, Any], where: str) -> Layer:
    """Values from one mapping, e.g. a config file section; ``where`` is its place (``c.yaml: ingest``)."""
    parent = lambda key: where + "".join(f".{p}" for p in key.split(".")[:-1])  # noqa: E731
    return Layer(values, name=lambda key: f"{where}.{key}", scope=parent)


def file_layer(path: str | Path, section: str | None = None) -> Layer:
    """A YAML config file, or one top-level section of it (none there: an empty layer)."""
    data: Any = load_yaml(path)
    if section is None:
        # The keys of a whole file are named after the file and a colon: c.yaml: model.fusion.
        return Layer(
            data,
            name=lambda key: f"{path}: {key}",
            scope=lambda key: f"{path}" + (f": {key.rpartition('.')[0]}" if "." in key else ""),
        )
    data = data.get(section, {})
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: '{section}' must be a mapping")
    return mapping_layer(data, f"{path}: {section}")


def env_layer(variables: Mapping[str, str], env: Mapping[str, str], section: str) -> Layer:
    """The set ones of ``variables`` (environment variable -> setting)."""
    given = {key: env[var] for var, key in variables.items() if env.get(var)}
    var_of = {key: var for var, key in variables.items()}
    return Layer(given, name=lambda key: f"{var_of[key]} ({section}.{key})", scope=lambda key: var_of[key])


def flag_layer(values: Mapping[str, Any], flags: Mapping[str, str], section: str) -> Layer:
    """Values given on the command line, by setting; ``flags`` names each setting's flag (``--es-url``)."""
    given = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if v is not None and v != ()}
    flag = lambda key: flags.get(key, "--" + key.rpartition(".")[2].replace("_", "-"))  # noqa: E731
    return Layer(given, name=lambda key: f"{flag(key)} ({section}.{key})", scope=flag)


def set_layer(pairs: Iterable[str], where: str = "--set") -> Layer:
    """``a.b=value`` overrides, the values parsed as YAML scalars (``[a, b]`` is a list)."""
    values: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"{where}: expected key=value, got {pair!r}")
        dotted, raw = pair.split("=", 1)
        values[dotted.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    return Layer(values, name=lambda key: f"{where} {key}", scope=lambda key: f"{where} {key}")


Sources = dict[str, tuple[Any, str]]


def merge_layers(cls: type, layers: Iterable[Layer]) -> Sources:
    """Each setting's value from the last layer that gives it, with the name of that source: dotted key ->
    (value, name). A key ``cls`` does not have fails here, naming its layer and the close matches."""
    merged: Sources = {}
    for layer in layers:
        for key, value in layer.values.items():
            _place(cls, str(key), value, layer, merged, str(key))
    return merged


def _place(cls: type, key: str, value: Any, layer: Layer, merged: Sources, full: str) -> None:
    hints = typing.get_type_hints(cls)
    head, _, rest = key.partition(".")
    if head not in hints:
        raise _unknown_key(head, hints, layer.scope(full), _leaves(cls))
    hint = hints[head]
    prefix = full[: len(full) - len(key)]
    if rest:
        if not dataclasses.is_dataclass(hint):
            raise ConfigError(f"{layer.scope(full)}: '{head}' has no sub-settings")
        _place(hint, rest, value, layer, merged, full)  # type: ignore[arg-type]
    elif dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        for name, inner in value.items():
            _place(hint, str(name), inner, layer, merged, f"{full}.{name}")  # type: ignore[arg-type]
    else:
        merged[prefix + head] = (value, layer.name(full))


def build(cls: type[T], merged: Sources, prefix: str = "") -> T:
    """``cls`` from merged values (``merge_layers``); what no layer gives keeps the dataclass default."""
    kwargs = {}
    for name, hint in typing.get_type_hints(cls).items():
        key = prefix + name
        if key in merged:
            value, where = merged[key]
            kwargs[name] = _coerce(value, hint, where)
        elif dataclasses.is_dataclass(hint) and any(k.startswith(key + ".") for k in merged):
            kwargs[name] = build(hint, merged, key + ".")  # type: ignore[arg-type]
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise _sourced(exc, merged) from None


def _sourced(exc: ConfigError, merged: Sources) -> ConfigError:
    """A settings class's own check names the setting (``tune.epochs must be at least 1``); put the file, variable
    or flag that gave the value in its place (``c.yaml: tune.epochs must be ...``)."""
    message = str(exc)
    setting = message.split(" ", 1)[0]
    # A class may name its setting with its section (ingest.encode_batch) or without (chunking.overlap).
    for key, (_, where) in merged.items():
        if where != setting and (setting == key or setting.endswith("." + key)):
            return ConfigError(where + message[len(setting) :])
    return exc


def compose(cls: type[T], *layers: Layer) -> T:
    """Settings ``cls`` from its defaults and then each layer in turn (later ones win): the one way every
    command resolves a config file, the environment and its flags."""
    return build(cls, merge_layers(cls, layers))


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a nested mapping; unknown keys are errors with close matches."""
    return compose(cls, mapping_layer(data, where))


def to_dict(obj: Any, redact: bool = True) -> Any:
    """Plain data for YAML/JSON output; secrets become ``<redacted>`` unless ``redact`` is false."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name), redact) for f in dataclasses.fields(obj)}
    if isinstance(obj, Secret):
        return REDACTED if redact else obj.reveal()
    if isinstance(obj, (list, tuple)):
        return [to_dict(v, redact) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v, redact) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def resolve_connection(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> ConnectionSettings:
    """Connection settings by precedence: CLI flags, environment, config file (``es:`` section), defaults.

    Every value is checked here, before anything connects; an error names the flag, variable or file key it
    came from.
    """
    layers = [file_layer(config_file, "es")] if config_file else []
    env = os.environ if env is None else env
    layers += [env_layer(CONNECTION_ENV, env, "es"), flag_layer(cli or {}, CONNECTION_FLAGS, "es")]
    merged = merge_layers(ConnectionSettings, layers)
    if "cloud_id" in merged and "hosts" in merged:
        # Where to connect is one choice: the later source's (a flag over the environment over the file).
        rank = {key: i for i, layer in enumerate(layers) for key in layer.values}
        if rank["cloud_id"] == rank["hosts"]:
            raise ConfigError(
                f"{merged['hosts'][1]} and {merged['cloud_id'][1]}: give an Elasticsearch URL or an Elastic Cloud "
                "id, not both"
            )
        del merged["cloud_id" if rank["hosts"] > rank["cloud_id"] else "hosts"]
    settings = build(ConnectionSettings, merged)
    source = {key: where for key, (_, where) in merged.items()}
    fields = [f.name for f in dataclasses.fields(ConnectionSettings)]
    return check_connection(settings, {name: source.get(name, f"es.{name}") for name in fields})


def shown_url(url: str) -> str:
    """``url`` as a message may show it: a password in it (``http://user:secret@host``, which the client takes)
    redacted, valid URL or not."""
    # To the last @, as the client splits (a password may hold an unencoded @ or /).
    return re.sub(r"(//[^/@:]*):.*@", rf"\1:{REDACTED}@", url)


def _check_url(url: str, where: str) -> str:
    """The URL's scheme, after checking it has an http(s) scheme, a host and a valid port."""
    shape = "expected a URL like http://localhost:9200"
    shown = shown_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        # The parser's reason quotes the part it choked on, which may be a piece of a password.
        reason = f" ({exc})" if "@" not in url else ""
        raise ConfigError(f"{where}: {shape}, got {shown!r}{reason}") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{where}: {shape} (scheme http or https), got {shown!r}")
    if not parts.hostname or any(c.isspace() for c in parts.netloc):
        raise ConfigError(f"{where}: {shape} (with a host name), got {shown!r}")
    if port == 0 or (port is None and parts.scheme == "http"):
        # The client takes 443 for https without a port, but no default for http (it would refuse as "es:").
        raise ConfigError(f"{where}: {shape} (with a port 1-65535), got {shown!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"{where}: {shape} (no ?query or #fragment), got {shown!r}")
    return parts.scheme


def check_connection(settings: ConnectionSettings, where: Mapping[str, str]) -> ConnectionSettings:
    """Reject connection settings the client would fail on later (or silently ignore); ``where`` names sources."""
    if settings.cloud_id:
        try:
            parse_cloud_id(settings.cloud_id)
        except ValueError:
            raise ConfigError(f"{where['cloud_id']}: not an Elastic Cloud id (expected name:base64)") from None
        schemes = {"https"}
    else:
        if not settings.hosts:
            raise ConfigError(f"{where['hosts']}: no Elasticsearch URL given")
        schemes = {_check_url(url, where["hosts"]) for url in settings.hosts}
        if repeated := next((url for i, url in enumerate(settings.hosts) if url in settings.hosts[:i]), None):
            raise ConfigError(f"{where['hosts']}: {shown_url(repeated)!r} is given twice")
    timeout = settings.request_timeout
    if not (math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"{where['request_timeout']}: expected a number of seconds above 0, got {timeout!r}")
    if settings.max_retries < 0:
        raise ConfigError(f"{where['max_retries']}: expected 0 or more retries, got {settings.max_retries!r}")
    if settings.api_key is None and (settings.username is None) != (settings.password is None):
        given, missing, how = (
            ("username", "password", "RALM_ES_PASSWORD or es.password in the config file")
            if settings.password is None
            else ("password", "username", "--es-username, RALM_ES_USERNAME or es.username in the config file")
        )
        raise ConfigError(f"{where[given]}: a {given} without a {missing} does nothing; set {how}")
    if settings.ca_certs:
        if schemes == {"http"}:
            # A CA bundle (e.g. a leftover RALM_ES_CA_CERTS) does nothing over plain HTTP: say so, not crash.
            log.warning("%s: ignored, the Elasticsearch URL is http:// (no TLS)", where["ca_certs"])
            return dataclasses.replace(settings, ca_certs=None)
        if "http" in schemes:
            raise ConfigError(f"{where['hosts']}: mixes http:// and https:// URLs; a CA bundle needs https for all")
        if not Path(settings.ca_certs).is_file():
            raise ConfigError(f"{where['ca_certs']}: no such file: {settings.ca_certs}")
    return settings
