"""Regenerate the Dev Tools snippets of docs/kibana.md from the code that builds ralm-es's searches.

The bodies come from the pure ``search_requests`` and ``search_body``, exactly as ``ralm-es search
--explain-dsl`` prints them; the query vector is the packaged all-MiniLM-L6-v2's, rounded to 4 decimals.
Run ``python kibana/snippets.py`` after changing the query DSL; tests/test_kibana.py fails until you do.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from ralm_es.embed import Encoder
from ralm_es.retrieve.retriever import RetrievalSettings, search_requests
from ralm_es.store.base import Filter
from ralm_es.store.elastic import FieldMap, search_body

DOC = Path(__file__).resolve().parents[1] / "docs" / "kibana.md"
START, END = "<!-- snippets:start -->", "<!-- snippets:end -->"
INDEX = "passages"
QUERY = "insulin lowers blood glucose"
FILTERS = [Filter("topic", "term", "medicine")]
VECTOR = re.compile(r'"query_vector": \[[^\]]*\]')


def dev_tools(body: dict[str, Any]) -> str:
    """``POST passages/_search`` and the body, with the query vector kept on one line."""
    text = json.dumps(body, indent=2)
    text = VECTOR.sub(lambda m: '"query_vector": ' + json.dumps(json.loads(m.group(0).split(": ", 1)[1])), text)
    return f"POST {INDEX}/_search\n{text}"


def bodies(encoder: Encoder) -> dict[str, list[dict[str, Any]]]:
    """The request bodies of each search, keyed by the doc section they appear in."""
    settings = RetrievalSettings()
    vector = [round(float(x), 4) for x in encoder.encode([QUERY])[0]]
    k, fields = settings.k, FieldMap()
    return {
        "bm25": [search_body(r, fields) for r in search_requests(settings, QUERY, None, "bm25", k, [], [])],
        "knn": [search_body(r, fields) for r in search_requests(settings, QUERY, vector, "dense", k, [], [])],
        # Hybrid candidates are ids and scores until fusion has chosen the k to read (a store with doc-valued ids).
        "hybrid": [
            search_body(r, fields, light=not r.bodies)
            for r in search_requests(settings, QUERY, vector, "hybrid", k, FILTERS, [], bodies=False)
        ],
    }


SECTIONS = {
    "bm25": '### BM25\n\n`ralm-es search --mode bm25 "{q}" --explain-dsl`:',
    "knn": '### kNN\n\n`ralm-es search --mode dense "{q}" --explain-dsl` (the vector is the query\'s embedding):',
    "hybrid": '### Hybrid (BM25 + kNN)\n\n`ralm-es search "{q}" --filter topic=medicine --explain-dsl` sends both '
    "searches; ralm-es fuses the two rankings itself (reciprocal-rank fusion by default), because the `rrf` "
    "retriever needs a paid licence. Both ask for ids and scores only (`stored_fields: _none_`: no candidate's "
    "`_source`, vector and all, is loaded); ralm-es then reads the fused top k with one `terms` search on `id`. "
    "Run both in Dev Tools to see each half:",
}


def render(encoder: Encoder) -> str:
    parts = []
    for name, found in bodies(encoder).items():
        blocks = "\n\n".join(f"```\n{dev_tools(body)}\n```" for body in found)
        parts.append(SECTIONS[name].format(q=QUERY) + "\n\n" + blocks)
    return "\n\n".join(parts)


def replace_snippets(doc: str, snippets: str) -> str:
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{snippets}\n{END}{tail}"


if __name__ == "__main__":
    DOC.write_text(replace_snippets(DOC.read_text(encoding="utf-8"), render(Encoder(device="cpu"))), encoding="utf-8")
    sys.stdout.write(f"updated {DOC}\n")
