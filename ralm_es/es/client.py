"""Build the Elasticsearch client from resolved connection settings, and say clearly when nobody answers."""

from __future__ import annotations

from typing import Any

from elastic_transport import TlsError
from elasticsearch import ApiError, AuthenticationException, AuthorizationException, Elasticsearch, TransportError
from elasticsearch import ConnectionError as ESConnectionError
from elasticsearch.serializer import NdjsonSerializer, OrjsonSerializer

from ralm_es.config import ConfigError, ConnectionSettings, shown_url
from ralm_es.errors import RalmError


class OrjsonNdjsonSerializer(NdjsonSerializer, OrjsonSerializer):
    """NDJSON (``_bulk``, ``_msearch``) through orjson, as the client's ``OrjsonSerializer`` does plain JSON: the
    standard library took 250 ms to write one 500-passage bulk request with its vectors, orjson 28 ms."""

    mimetype = "application/x-ndjson"


# Requests and responses in orjson, whose float handling is most of a vector-carrying request's client time.
SERIALIZERS = {"application/json": OrjsonSerializer(), "application/x-ndjson": OrjsonNdjsonSerializer()}


class ClusterUnavailable(RalmError):
    """Nothing answered, or the cluster refused us; the message names the fix and never a secret."""


def build_client(settings: ConnectionSettings) -> Elasticsearch:
    kwargs: dict[str, Any] = {
        "request_timeout": settings.request_timeout,
        "max_retries": settings.max_retries,
        "retry_on_timeout": settings.retry_on_timeout,
        # 429 and gateway errors are worth a retry with the client's backoff.
        "retry_on_status": (429, 502, 503, 504),
        "serializers": SERIALIZERS,
    }
    if settings.cloud_id:
        kwargs["cloud_id"] = settings.cloud_id
    else:
        kwargs["hosts"] = settings.hosts
    if settings.api_key is not None:
        kwargs["api_key"] = settings.api_key.reveal()
    elif settings.username and settings.password is not None:
        kwargs["basic_auth"] = (settings.username, settings.password.reveal())
    if settings.ca_certs:
        kwargs["ca_certs"] = settings.ca_certs
    kwargs["verify_certs"] = settings.verify_certs
    try:
        return Elasticsearch(**kwargs)
    except ValueError as exc:
        # Settings built in code skip resolve_connection's checks; the client's refusal is still one line.
        raise ConfigError(f"es: the Elasticsearch client refused these connection settings ({exc})") from None


# What searching reads besides the documents: the vector field, the recorded encoder and tuned fusion (mapping),
# the indices behind an alias. A role with read alone is refused these.
METADATA_ACTIONS = ("indices:admin/mappings/get", "indices:admin/aliases/get")


def describe_api_error(exc: ApiError) -> str:
    """``403 security_exception: <reason>`` from an Elasticsearch error response, without request details."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error")
    if not isinstance(error, dict):
        return f"{exc.meta.status} {exc.message}"
    reason = str(error.get("reason"))
    text = f"{exc.meta.status} {error.get('type')}: {reason}"
    # "closed", "no such index": the index they are about is a field of their own (one behind an alias, say).
    if isinstance(error.get("index"), str) and error["index"] not in reason:
        text += f" (index '{error['index']}')"
    if exc.meta.status == 403 and any(action in reason for action in METADATA_ACTIONS):
        text += (
            "; ralm-es reads each index's mapping and aliases, so the role needs view_index_metadata as well as "
            "read on it"
        )
    return text


def where(settings: ConnectionSettings) -> str:
    return "Elastic Cloud deployment" if settings.cloud_id else ", ".join(map(shown_url, settings.hosts))


def connect(settings: ConnectionSettings) -> Elasticsearch:
    """A client that has answered one health request, or ``ClusterUnavailable`` naming the fix."""
    client = build_client(settings)
    try:
        client.cluster.health()
    except AuthorizationException:
        # Authenticated, but without the monitor privilege (a read-only principal): that is enough to go on.
        return client
    except AuthenticationException as exc:
        raise ClusterUnavailable(
            f"Elasticsearch at {where(settings)} rejected the credentials (401 {exc.message}); "
            "check RALM_ES_API_KEY or RALM_ES_USERNAME/RALM_ES_PASSWORD"
        ) from None
    except TlsError:
        raise ClusterUnavailable(
            f"TLS certificate verification failed for {where(settings)}: pass the cluster's CA with --es-ca-certs "
            "or RALM_ES_CA_CERTS (verification is on by default; --es-no-verify-certs turns it off)"
        ) from None
    except ESConnectionError as exc:
        raise ClusterUnavailable(
            f"nothing answers at {where(settings)} ({type(exc).__name__}). Start a local node with "
            "`ralm-es es start`, run `docker compose up -d`, or point to a cluster with --es-url / RALM_ES_URL"
        ) from None
    except (ApiError, TransportError) as exc:
        raise ClusterUnavailable(f"Elasticsearch at {where(settings)} answered with an error: {exc}") from None
    return client
