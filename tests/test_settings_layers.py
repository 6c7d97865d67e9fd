"""Settings composed once: every command resolves defaults, then the config file's section, the environment, its
flags and ``--set``, in that order, through one helper; sections are dataclasses of their own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ralm_es.cli.main import cli
from ralm_es.config import ConfigError, compose, file_layer, flag_layer, set_layer
from ralm_es.ingest import IngestSettings
from ralm_es.store.local import LocalBackend


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    rows = [{"id": f"d{i}", "body": f"passage number {i} about glaciers and volcanoes " * 12} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_later_layers_win_and_sections_nest(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", {"ingest": {"bulk": {"docs": 7, "retries": 2}, "read": {"unit": "file"}}})
    settings = compose(
        IngestSettings,
        file_layer(config, "ingest"),
        flag_layer({"chunking.max_tokens": 128}, {"chunking.max_tokens": "--max-tokens"}, "ingest"),
        set_layer(["bulk.docs=9", "read.text_field=body"]),
    )
    assert (settings.bulk.docs, settings.bulk.retries) == (9, 2)
    assert (settings.read.unit, settings.read.text_field) == ("file", "body")
    assert settings.chunking.max_tokens == 128 and settings.chunking.overlap == 32


def test_errors_name_the_source_of_the_value(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", {"ingest": {"bulk": {"docs": "many"}}})
    with pytest.raises(ConfigError, match=r"c\.yaml: ingest\.bulk\.docs: expected int, got 'many'"):
        compose(IngestSettings, file_layer(config, "ingest"))
    with pytest.raises(ConfigError, match=r"^--max-tokens \(ingest\.chunking\.max_tokens\): expected int"):
        flags = flag_layer({"chunking.max_tokens": "x"}, {"chunking.max_tokens": "--max-tokens"}, "ingest")
        compose(IngestSettings, flags)
    write(config, {"ingest": {"bulk": {"doc": 3}}})
    with pytest.raises(ConfigError, match=r"c\.yaml: ingest\.bulk: unknown setting 'doc'; did you mean docs"):
        compose(IngestSettings, file_layer(config, "ingest"))


@pytest.mark.parametrize(("flat", "dotted"), [("bulk_docs", "bulk.docs"), ("max_chars", "read.max_chars")])
def test_a_setting_given_outside_its_section_is_pointed_to_it(flat: str, dotted: str) -> None:
    with pytest.raises(ConfigError, match=rf"--set {flat}: unknown setting '{flat}'; did you mean {dotted}\?"):
        compose(IngestSettings, set_layer([f"{flat}=5"]))


def test_ingest_takes_the_config_file_then_flags_then_set(tmp_path: Path) -> None:
    """A flag given on the command line wins over the file even when it repeats the default value."""
    runner = CliRunner()
    config = write(
        tmp_path / "c.yaml", {"ingest": {"read": {"text_field": "body"}, "chunking": {"max_tokens": 64, "overlap": 8}}}
    )
    base = ["--config", str(config), "ingest", str(corpus(tmp_path)), "--backend", "local", "--no-embed", "--quiet"]
    cases = {
        "file": ([], (64, 8)),
        "flag": (["--max-tokens", "256"], (256, 8)),
        "set": (["--max-tokens", "256", "--set", "chunking.overlap=4"], (256, 4)),
    }
    for name, (extra, (max_tokens, overlap)) in cases.items():
        index = tmp_path / name
        result = runner.invoke(cli, [*base, "--index", str(index), *extra, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["indexed"] == LocalBackend(index).count() > 0
        chunking = LocalBackend(index).spec().chunking
        assert chunking is not None and (chunking.max_tokens, chunking.overlap) == (max_tokens, overlap), name


def test_retrieve_takes_recorded_then_file_then_flag_settings(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Fusion settings recorded with the index stand in only where neither the config file nor a flag speaks;
    the notice lists just those."""
    runner = CliRunner()
    index = tmp_path / "idx"
    docs = corpus(tmp_path)
    ingest = ["ingest", str(docs), "--backend", "local", "--index", str(index), "--model", str(tiny_model_dir)]
    assert runner.invoke(cli, [*ingest, "--set", "read.text_field=body", "--quiet"]).exit_code == 0
    LocalBackend(index).record_tuned_settings({"settings": {"fusion": "linear", "norm": "zscore", "depth": 20}})
    config = write(tmp_path / "c.yaml", {"retrieval": {"norm": "minmax", "dense_weight": 0.3}})
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"_id": "q1", "text": "glaciers"}) + "\n")
    out = tmp_path / "cache.jsonl"
    args = ["--config", str(config), "retrieve", str(queries), "--backend", "local", "--index", str(index)]
    result = runner.invoke(cli, [*args, "--model", str(tiny_model_dir), "--depth", "30", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    header = json.loads(out.read_text().splitlines()[0])
    assert {k: header["fusion"][k] for k in ("fusion", "norm", "dense_weight", "depth")} == {
        "fusion": "linear",
        "norm": "minmax",
        "dense_weight": 0.3,
        "depth": 30,
    }
    assert 'fusion settings tuned for this index: {"fusion": "linear"}' in result.stderr
