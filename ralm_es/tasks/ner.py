"""Named-entity recognition: CoNLL files in IOB2 as word-tagged examples, and entity-level seqeval metrics."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2

from ralm_es.corpus.conll import ConllSentence, read_conll
from ralm_es.corpus.types import ReadError
from ralm_es.tasks.base import DataError, Example, LabelMap, require_examples

IOB2_TAG = re.compile(r"^(O|[BI]-\S+)$")


def _line_of(source: str, offset: int) -> str:
    file, _, line = source.rpartition(":")
    return f"{file}:{int(line) + offset}"


def read_ner(path: str | Path, labelled: bool = True) -> list[Example]:
    """Sentences of a CoNLL file (ids from the corpus reader, so retrieval caches match). With ``labelled`` the
    last column must be an IOB2 tag; a malformed line fails naming ``file:line``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    examples = []
    for item in read_conll(path):
        if isinstance(item, ReadError):
            raise DataError(f"{item.source}: malformed CoNLL line: {item.reason}")
        examples.append(_example(item, labelled))
    require_examples(examples, path)
    return examples


def _example(sentence: ConllSentence, labelled: bool) -> Example:
    tags = None
    if labelled:
        if not sentence.columns[0]:
            raise DataError(
                f"{sentence.source}: malformed CoNLL line: expected an IOB2 tag (O, B-TYPE, I-TYPE) after the "
                "token, found the token alone"
            )
        tags = sentence.labels
        for i, tag in enumerate(tags):
            if not IOB2_TAG.match(tag):
                raise DataError(
                    f"{_line_of(sentence.source, i)}: malformed CoNLL line: expected an IOB2 tag "
                    f"(O, B-TYPE, I-TYPE) in the last column, found '{tag}'"
                )
            # Strict IOB2 scoring drops an entity that starts with I- (IOB1 files): recall would never see it.
            before = tags[i - 1] if i else "O"
            if tag.startswith("I-") and before[2:] != tag[2:]:
                raise DataError(
                    f"{_line_of(sentence.source, i)}: '{tag}' after '{before}' starts no entity in IOB2, where an "
                    "entity starts with B-: convert IOB1 tags first"
                )
    return Example(id=sentence.id, words=sentence.tokens, source=sentence.source, tags=tags)


def ner_labels(examples: Sequence[Example]) -> LabelMap:
    """Tags seen in the data: ``O`` first, then by entity type and B before I."""
    seen = {tag for ex in examples for tag in ex.tags or ()}
    return LabelMap(sorted(seen, key=lambda t: (t != "O", t[2:], t[:1])))


def check_ner_labels(examples: Sequence[Example], labels: LabelMap) -> None:
    for ex in examples:
        for i, tag in enumerate(ex.tags or ()):
            labels.index(tag, _line_of(ex.source, i))


def ner_metrics(gold: list[list[str]], pred: list[list[str]]) -> dict[str, Any]:
    """Entity-level micro precision / recall / F1 (strict IOB2 spans), per type, and seqeval's report table."""
    kwargs: dict[str, Any] = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    if not any(tag != "O" for tags in (*gold, *pred) for tag in tags):
        # seqeval's report has no row to print then (it fails on an empty table); its scores are 0 by zero_division.
        zero = {"f1": 0.0, "precision": 0.0, "recall": 0.0}
        return {**zero, "per_type": {}, "report": "no entities in the gold tags or the predictions"}
    per_type = classification_report(gold, pred, output_dict=True, **kwargs)
    types = {
        name: {"precision": v["precision"], "recall": v["recall"], "f1": v["f1-score"], "support": int(v["support"])}
        for name, v in per_type.items()
        if not name.endswith(" avg")
    }
    return {
        "f1": f1_score(gold, pred, **kwargs),
        "precision": precision_score(gold, pred, **kwargs),
        "recall": recall_score(gold, pred, **kwargs),
        "per_type": types,
        "report": classification_report(gold, pred, digits=4, **kwargs),
    }


@dataclass(frozen=True)
class NerTask:
    """Named-entity recognition on CoNLL files: a tag per word, entity-level F1."""

    main_metric: str = "f1"

    def read(self, path: str | Path, labelled: bool = True) -> list[Example]:
        return read_ner(path, labelled=labelled)

    def labels(self, examples: Sequence[Example]) -> LabelMap:
        return ner_labels(examples)

    def check_labels(self, examples: Sequence[Example], labels: LabelMap) -> None:
        check_ner_labels(examples, labels)

    def gold(self, examples: Sequence[Example]) -> list[Any]:
        return [list(ex.tags or ()) for ex in examples]

    def metrics(self, gold: list[Any], pred: list[Any]) -> dict[str, Any]:
        return ner_metrics(gold, pred)
