"""Bad input to any command ends in one line naming what is wrong, a non-zero exit and no traceback.

Every command of ``ralm-es --help`` is driven as a user would (a subprocess) with bad values: URLs, timeouts,
retry counts and TLS files through flags (before and after the command), environment and config file; bad
counts and ranges; missing, unreadable and misplaced files; unsafe names.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ralm_es.corpora.benchmarks import sample_path
from ralm_es.node.cluster import free_port

RALM = [sys.executable, "-m", "ralm_es.cli.main"]
SAMPLE = str(sample_path("sample_corpus.jsonl"))
CONLL = str(sample_path("sample_ner.txt"))
CLAIMS = str(sample_path("sample_claims.jsonl"))
# Claims given as qrels: every line the wrong shape.
TUNE = ["tune-retriever", "--queries", CLAIMS, "--qrels", CLAIMS, "--corpus", SAMPLE, "--out", "{tmp}/tuned"]
LOCAL = ["--backend", "local", "--index", "smp", "--mode", "bm25"]
# A training config whose data exists, so that only the setting under test can be what is refused.
TRAIN = ["train", "--config", "{tmp}/train.yaml", "--set", "run.out={tmp}/run", "--set"]

# (id, arguments, extra environment, text the one error line must contain). "{tmp}" is the test's folder, in
# which smp is a local index of the sample corpus, bad.yaml has a negative es.request_timeout, broken.yaml is
# not YAML and afile is a plain file.
CASES: list[tuple[str, list[str], dict[str, str], str]] = [
    # Connection settings, each where a user can give it.
    ("url-no-scheme", ["search", "q", "--es-url", "localhost:9200"], {}, "--es-url (es.hosts): expected a URL"),
    ("url-before-command", ["--es-url", "ftp://h:9200", "search", "q"], {}, "--es-url (es.hosts): expected a URL"),
    ("url-bad-port", ["search", "q", "--es-url", "http://h:99999"], {}, "Port out of range"),
    ("timeout-negative", ["search", "q", "--es-timeout", "-1"], {}, "--es-timeout (es.request_timeout): expected"),
    ("timeout-not-a-number", ["search", "q", "--es-timeout", "soon"], {}, "Invalid value for '--es-timeout'"),
    ("retries-negative", ["search", "q", "--es-retries", "-1"], {}, "--es-retries (es.max_retries): expected 0 or"),
    ("retries-not-a-number", ["search", "q", "--es-retries", "x"], {}, "Invalid value for '--es-retries'"),
    (
        "ca-certs-missing",
        ["search", "q", "--es-url", "https://127.0.0.1:9200", "--es-ca-certs", "{tmp}/none.crt"],
        {},
        "--es-ca-certs (es.ca_certs): no such file",
    ),
    ("env-url", ["search", "q"], {"RALM_ES_URL": "http//oops"}, "RALM_ES_URL (es.hosts): expected a URL"),
    ("env-timeout", ["search", "q"], {"RALM_ES_REQUEST_TIMEOUT": "0"}, "RALM_ES_REQUEST_TIMEOUT (es.request_tim"),
    ("env-retries", ["search", "q"], {"RALM_ES_MAX_RETRIES": "lots"}, "RALM_ES_MAX_RETRIES (es.max_retries): exp"),
    ("env-verify", ["search", "q"], {"RALM_ES_VERIFY_CERTS": "maybe"}, "RALM_ES_VERIFY_CERTS (es.verify_certs)"),
    # The base environment's RALM_ES_URL unset (empty): a URL and a cloud id from one source are refused together.
    ("env-cloud-id", ["search", "q"], {"RALM_ES_CLOUD_ID": "garbage", "RALM_ES_URL": ""}, "RALM_ES_CLOUD_ID (es.cl"),
    ("env-cloud-id-and-url", ["search", "q"], {"RALM_ES_CLOUD_ID": "x:eA=="}, "or an Elastic Cloud id, not both"),
    ("config-missing", ["search", "q", "--config", "{tmp}/none.yaml"], {}, "none.yaml: cannot read config file"),
    ("config-bad-value", ["--config", "{tmp}/bad.yaml", "search", "q"], {}, "bad.yaml: es.request_timeout: expected"),
    ("config-not-yaml", ["search", "q", "--config", "{tmp}/broken.yaml"], {}, "broken.yaml:3: invalid YAML"),
    # The connection flags on every command that connects.
    ("ingest-url", ["ingest", SAMPLE, "--no-embed", "--es-url", "nope"], {}, "--es-url (es.hosts)"),
    ("retrieve-timeout", ["retrieve", SAMPLE, "--out", "{tmp}/o.jsonl", "--es-timeout", "0"], {}, "--es-timeout ("),
    (
        "evaluate-retries",
        ["evaluate", "--queries", SAMPLE, "--qrels", SAMPLE, "--es-retries", "-1"],
        {},
        "--es-retries (es.max_retries)",
    ),
    ("serve-url", ["serve", "--mode", "bm25", "--es-url", "nope"], {}, "--es-url (es.hosts)"),
    # search
    ("search-k-zero", ["search", "q", *LOCAL, "-k", "0"], {}, "Invalid value for '-k' / '--k': 0 is not in the range"),
    ("search-k-negative", ["search", "q", *LOCAL, "-k", "-3"], {}, "Invalid value for '-k' / '--k'"),
    ("search-k-text", ["search", "q", *LOCAL, "-k", "many"], {}, "'many' is not a valid integer"),
    ("search-depth", ["search", "q", *LOCAL, "--depth", "0"], {}, "Invalid value for '--depth'"),
    ("search-candidates", ["search", "q", *LOCAL, "--num-candidates", "0"], {}, "Invalid value for '--num-candidates'"),
    ("search-rrf-k", ["search", "q", *LOCAL, "--rrf-k", "-1"], {}, "Invalid value for '--rrf-k'"),
    ("search-dense-weight", ["search", "q", *LOCAL, "--dense-weight", "1.5"], {}, "Invalid value for '--dense-weight'"),
    ("search-title-boost", ["search", "q", *LOCAL, "--title-boost", "-1"], {}, "Invalid value for '--title-boost'"),
    ("search-filter", ["search", "q", *LOCAL, "--filter", "???"], {}, "expected field=value"),
    ("search-mode", ["search", "q", "--mode", "fuzzy"], {}, "Invalid value for '--mode'"),
    ("search-no-index", ["search", "q", "--backend", "local", "--index", "nothere"], {}, "no local index at"),
    ("search-empty-name", ["search", "q", "--backend", "local", "--index", ""], {}, "--index: a local index needs"),
    ("search-parent", ["search", "q", "--backend", "local", "--index", ".."], {}, "--index '..': a local index is"),
    ("search-unknown-option", ["search", "q", "--bogus"], {}, "No such option '--bogus'"),
    # retrieve
    ("retrieve-no-input", ["retrieve", "{tmp}/none.jsonl", "--out", "{tmp}/o.jsonl"], {}, "does not exist"),
    # A BEIR folder read as a corpus: its documents were retrieved for, not its queries.
    ("retrieve-folder", ["retrieve", "{tmp}", "--out", "{tmp}/o.jsonl", *LOCAL], {}, "is a directory"),
    ("retrieve-k", ["retrieve", SAMPLE, "--out", "{tmp}/o.jsonl", *LOCAL, "-k", "0"], {}, "Invalid value for '-k'"),
    ("retrieve-batch", ["retrieve", SAMPLE, "--out", "{tmp}/o.jsonl", *LOCAL, "--batch", "0"], {}, "'--batch'"),
    ("retrieve-out-folder", ["retrieve", SAMPLE, "--out", "{tmp}", *LOCAL], {}, "is a directory"),
    (
        "retrieve-out-under-a-file",
        ["retrieve", SAMPLE, "--out", "{tmp}/afile/o.jsonl", *LOCAL, "--quiet"],
        {},
        "afile: File exists",
    ),
    # evaluate
    ("evaluate-no-queries", ["evaluate", "--queries", "{tmp}/none", "--qrels", SAMPLE], {}, "'--queries'"),
    # ingest
    ("ingest-no-input", ["ingest", "{tmp}/none.jsonl"], {}, "Path '{tmp}/none.jsonl' does not exist"),
    ("ingest-format", ["ingest", SAMPLE, "--format", "xml"], {}, "Invalid value for '--format'"),
    ("ingest-set", ["ingest", SAMPLE, "--no-embed", "--backend", "local", "--set", "bogus=1"], {}, "'bogus'"),
    (
        "ingest-device",
        ["ingest", SAMPLE, "--backend", "local", "--index", "d", "--device", "gpu9", "--quiet"],
        {},
        "'gpu9'",
    ),
    (
        "ingest-index-under-a-file",
        ["ingest", SAMPLE, "--no-embed", "--backend", "local", "--index", "{tmp}/afile/idx", "--quiet"],
        {},
        "afile/idx",
    ),
    # Elasticsearch's settings given to the local backend are refused, not ignored.
    (
        "ingest-local-shards",
        ["ingest", SAMPLE, "--no-embed", "--backend", "local", "--index", "{tmp}/li", "--shards", "2", "--quiet"],
        {},
        "index.shards=2 shape an Elasticsearch index",
    ),
    (
        "ingest-local-bulk",
        [
            "ingest",
            SAMPLE,
            "--no-embed",
            "--backend",
            "local",
            "--index",
            "{tmp}/lb",
            "--set",
            "bulk.retries=9",
            "--quiet",
        ],
        {},
        "bulk.retries=9 concern bulk requests to Elasticsearch",
    ),
    ("search-local-field", ["search", "q", *LOCAL, "--field", "text=body"], {}, "--field and a config file's fields:"),
    # train, predict, evaluate-model
    ("train-config-missing", ["train", "--config", "{tmp}/none.yaml"], {}, "none.yaml: cannot read config file"),
    ("train-stop-after", ["train", "--config", "{tmp}/bad.yaml", "--stop-after", "0"], {}, "'--stop-after'"),
    ("train-batch-size", [*TRAIN, "train.batch_size=0"], {}, "train.batch_size must be at least 1, got 0"),
    ("train-eval-every", [*TRAIN, "train.eval_every=0"], {}, "train.eval_every must be at least 1, got 0"),
    ("train-lr", [*TRAIN, "train.lr=-0.001"], {}, "train.lr must be a finite number above 0, got -0.001"),
    ("train-epochs", [*TRAIN, "train.epochs=0"], {}, "train.epochs must be a finite number above 0, got 0.0"),
    ("train-model-k", [*TRAIN, "model.k=0"], {}, "model.k must be at least 1, got 0"),
    ("train-max-length", [*TRAIN, "model.max_length=2"], {}, "model.max_length must be at least 3"),
    ("train-limit", [*TRAIN, "data.limit=0"], {}, "data.limit must be at least 1, got 0"),
    ("train-fraction", [*TRAIN, "data.train_fraction=2"], {}, "data.train_fraction must be a fraction between 0 and 1"),
    ("train-holdout", [*TRAIN, "data.holdout=1"], {}, "data.holdout must be at least 0 and below 1"),
    ("train-holdout-dev", [*TRAIN, "data.holdout=0.2"], {}, "data.holdout and data.dev both give a dev set"),
    (
        "train-holdout-dev-cache",
        [*TRAIN, "data.dev=null", "--set", "data.dev_cache=c.jsonl", "--set", "data.holdout=0.2"],
        {},
        "data.dev_cache is not read with data.holdout",
    ),
    ("predict-not-a-run", ["predict", "--model", "{tmp}", SAMPLE], {}, "is not a ralm-es run folder"),
    ("predict-batch", ["predict", "--model", "{tmp}", SAMPLE, "--batch-size", "0"], {}, "'--batch-size'"),
    ("predict-top", ["predict", "--model", "{tmp}", SAMPLE, "--top", "0"], {}, "Invalid value for '--top'"),
    ("evaluate-model-batch", ["evaluate-model", "--model", "{tmp}", SAMPLE, "--batch-size", "0"], {}, "'--batch-size'"),
    # doc-context, tune-retriever
    ("doc-context-k", ["doc-context", CONLL, "--out", "{tmp}/c.jsonl", "-k", "0"], {}, "Invalid value for '-k'"),
    ("doc-context-context", ["doc-context", CONLL, "--out", "{tmp}/c.jsonl", "--context", "3"], {}, "needs --with"),
    ("tune-epochs", [*TUNE, "--epochs", "0"], {}, "Invalid value for '--epochs': 0 is not in the range x>=1"),
    (
        "tune-epochs-file",
        ["--config", "{tmp}/tune.yaml", *TUNE],
        {},
        "tune.epochs must be at least 1, got 0",
    ),
    ("tune-qrels", TUNE, {}, "expected 3 fields (query-id corpus-id score)"),
    # serve
    ("serve-port", ["serve", *LOCAL, "--port", "70000"], {}, "Invalid value for '--port'"),
    ("serve-graceful", ["serve", *LOCAL, "--graceful-timeout", "-1"], {}, "Invalid value for '--graceful-timeout'"),
    ("serve-max-k", ["serve", *LOCAL, "--max-k", "0"], {}, "Invalid value for '--max-k'"),
    ("serve-device", ["serve", *LOCAL, "--device", "cpu"], {}, "--device is where the --model run predicts"),
    # The default mode (hybrid) over an index without vectors: it started healthy and answered every search 400.
    ("serve-no-vectors", ["serve", "--backend", "local", "--index", "smp"], {}, "has no vectors: use --mode bm25"),
    ("evaluate-seed", ["evaluate", *LOCAL, "--queries", SAMPLE, "--qrels", SAMPLE, "--seed", "3"], {}, "set the split"),
    # es
    ("es-start-port", ["es", "start", "--port", "99999"], {}, "Invalid value for '--port'"),
    ("es-start-heap", ["es", "start", "--heap", "lots"], {}, "Invalid value for '--heap'"),
    ("es-start-timeout", ["es", "start", "--timeout", "-1"], {}, "Invalid value for '--timeout'"),
    ("es-start-nodes", ["es", "start", "--nodes", "0"], {}, "Invalid value for '--nodes'"),
    ("es-stop-timeout", ["es", "stop", "--timeout", "-5"], {}, "Invalid value for '--timeout'"),
    ("es-env-not-running", ["es", "env", "--name", "never"], {}, "cluster 'never' is not running"),
    ("es-useradd-not-running", ["es", "useradd", "bob", "--name", "never"], {}, "is not running with security"),
    ("no-such-command", ["nosuch"], {}, "No such command 'nosuch'"),
    ("no-such-es-command", ["es", "nosuch"], {}, "No such command 'nosuch'"),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("bad-input")
    (tmp / "bad.yaml").write_text("es:\n  request_timeout: -3\n")
    (tmp / "broken.yaml").write_text("es:\n  hosts: [a\n  user: b\n")
    (tmp / "afile").write_text("a file, not a folder\n")
    (tmp / "tune.yaml").write_text("tune:\n  epochs: 0\n")
    (tmp / "train.yaml").write_text(
        f"task:\n  type: ner\ndata:\n  train: {CONLL}\n  dev: {CONLL}\nmodel:\n  fusion: none\n"
    )
    proc = subprocess.run(
        [*RALM, "ingest", SAMPLE, "--backend", "local", "--index", "smp", "--no-embed", "--quiet"],
        capture_output=True,
        text=True,
        env=base_env(tmp),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return tmp


def base_env(tmp: Path) -> dict[str, str]:
    """No RALM_ES_* setting of the caller; a URL where nothing answers, so a check that misses shows."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RALM_ES_")}
    return {
        **env,
        "RALM_ES_HOME": str(tmp / "home"),
        "RALM_ES_RUNTIME": str(tmp / "runtime"),
        "RALM_ES_URL": f"http://127.0.0.1:{free_port()}",
        "RALM_ES_MAX_RETRIES": "0",
        "RALM_ES_NEW_PASSWORD": "pw-123456",
    }


@pytest.mark.parametrize(("args", "env", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_without_traceback(
    args: list[str], env: dict[str, str], expected: str, workdir: Path
) -> None:
    argv = [a.replace("{tmp}", str(workdir)) for a in args]
    proc = subprocess.run(
        [*RALM, *argv],
        capture_output=True,
        text=True,
        env={**base_env(workdir), **env},
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "Traceback" not in output, output
    assert proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ralm-es: error: "), lines[0]
    assert expected.replace("{tmp}", str(workdir)) in lines[0]
