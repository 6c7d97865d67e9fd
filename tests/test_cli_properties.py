"""Property tests over CLI option values: whatever a user types for a numeric option, a command either works or
ends in one ``ralm-es: error:`` line with a non-zero exit; no exception escapes ``main``, no traceback.

Commands run in-process on a local index of the sample corpus (BM25 only), so no cluster or encoder is needed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from ralm_es.cli.main import main
from ralm_es.corpora.benchmarks import sample_path

SAMPLE = str(sample_path("sample_corpus.jsonl"))
# What a user might type where a number is expected.
VALUES = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "0", "-0", "1e309", "nan", "inf", "-inf", "3.5", "ten", "0x10", "1_000", " 7 "]),
).map(str)
SEARCH_OPTIONS = ["-k", "--depth", "--num-candidates", "--dense-weight", "--rrf-k", "--title-boost"]
INGEST_OPTIONS = ["--max-tokens", "--overlap", "--shards", "--replicas"]
INGEST_SETTINGS = ["bulk.docs", "bulk.bytes", "encode_batch", "batch_passages", "read.max_chars", "bulk.retries"]


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["ralm-es", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def assert_one_line_or_success(code: int, err: str) -> None:
    """Success; or one error line; or (ingest) records refused one line each, naming ``file:line``, the run
    finishing with its counts."""
    if code == 0:
        return
    assert "Traceback" not in err, err
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith("ralm-es: error:")]
    refused = [line for line in lines if line.startswith(f"ralm-es: {SAMPLE}:")]
    assert len(errors) == 1 or (not errors and refused and "failed)" in lines[-1]), err


@pytest.fixture(scope="module")
def local_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    index = tmp_path_factory.mktemp("props") / "idx"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            sys,
            "argv",
            ["ralm-es", "ingest", SAMPLE, "--backend", "local", "--index", str(index), "--no-embed", "--quiet"],
        )
        with pytest.raises(SystemExit) as done:
            main()
            raise SystemExit(0)
    assert done.value.code in (0, None)
    return index


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(SEARCH_OPTIONS), value=VALUES)
def test_search_options_work_or_fail_in_one_line(
    option: str, value: str, local_index: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["search", "insulin", "--backend", "local", "--index", str(local_index), "--mode", "bm25", option, value]
    assert_one_line_or_success(*run(monkeypatch, capsys, args))


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from([*INGEST_OPTIONS, *(f"--set={s}" for s in INGEST_SETTINGS)]), value=VALUES)
def test_ingest_options_work_or_fail_in_one_line(
    option: str,
    value: str,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    given_value = (
        ["--set", f"{option.removeprefix('--set=')}={value}"] if option.startswith("--set=") else [option, value]
    )
    index = tmp_path_factory.mktemp("ingest") / "idx"
    args = ["ingest", SAMPLE, "--backend", "local", "--index", str(index), "--no-embed", "--quiet", *given_value]
    assert_one_line_or_success(*run(monkeypatch, capsys, args))
