"""docker-compose.yml: Docker cannot run here, so the file's structure and pinned versions are checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ralm_es.node.distribution import ES_VERSION

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service["environment"]
    if isinstance(env, dict):
        return {k: str(v) for k, v in env.items()}
    return dict(item.split("=", 1) for item in env)


def test_services_are_elasticsearch_and_kibana(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"elasticsearch", "kibana"}


@pytest.mark.parametrize(
    ("service", "image"),
    [
        ("elasticsearch", "docker.elastic.co/elasticsearch/elasticsearch"),
        ("kibana", "docker.elastic.co/kibana/kibana"),
    ],
)
def test_images_match_the_pinned_version(compose: dict[str, Any], service: str, image: str) -> None:
    name, version = compose["services"][service]["image"].rsplit(":", 1)
    assert name == image
    assert version == ES_VERSION


@pytest.mark.parametrize(("service", "port"), [("elasticsearch", 9200), ("kibana", 5601)])
def test_ports_are_published(compose: dict[str, Any], service: str, port: int) -> None:
    assert f"{port}:{port}" in compose["services"][service]["ports"]


@pytest.mark.parametrize("service", ["elasticsearch", "kibana"])
def test_each_service_has_a_health_check(compose: dict[str, Any], service: str) -> None:
    check = compose["services"][service]["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL")
    assert check["retries"] > 0


def test_elasticsearch_is_a_single_dev_node_with_a_data_volume(compose: dict[str, Any]) -> None:
    es = compose["services"]["elasticsearch"]
    env = environment(es)
    assert env["discovery.type"] == "single-node"
    assert env["xpack.security.enabled"] == "false"
    assert "-Xmx" in env["ES_JAVA_OPTS"]
    volume = es["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]


def test_kibana_waits_for_and_points_at_elasticsearch(compose: dict[str, Any]) -> None:
    kibana = compose["services"]["kibana"]
    assert environment(kibana)["ELASTICSEARCH_HOSTS"] == "http://elasticsearch:9200"
    assert kibana["depends_on"]["elasticsearch"]["condition"] == "service_healthy"
