"""Task data: CoNLL and JSONL parsing, label maps, metrics, and every bad-input case with its location."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from ralm_es.corpus.conll import ConllSentence, read_conll
from ralm_es.corpus.readers import content_id, read_corpus
from ralm_es.corpus.types import ReadError, Record
from ralm_es.inference.task import TASKS, TaskSettings, task_of
from ralm_es.model.labelling import LABELLINGS
from ralm_es.tasks import ClassificationTask, DataError, NerTask
from ralm_es.tasks.classification import classification_metrics, read_classification
from ralm_es.tasks.ner import ner_labels, ner_metrics, read_ner

CONLL = """-DOCSTART- -X- -X- O

EU NNP I-NP B-ORG
rejects VBZ I-VP O
German JJ I-NP B-MISC
call NN I-NP O

Peter NNP I-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP I-NP B-LOC
"""


def test_conll_sentences_keep_reader_ids_and_tags(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text(CONLL, encoding="utf-8")
    examples = read_ner(path)
    assert [ex.id for ex in examples] == ["train-d0-s0", "train-d0-s1", "train-d1-s0"]
    assert examples[1].words == ("Peter", "Blackburn") and examples[1].tags == ("B-PER", "I-PER")
    assert examples[0].source == f"{path}:3"
    assert ner_labels(examples).labels == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER"]


def test_malformed_conll_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(CONLL.replace("call NN I-NP O", "call NN I-NP"), encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}:6: malformed CoNLL line: expected 4 columns, found 3"):
        read_ner(path)
    path.write_text(CONLL.replace("Blackburn NNP I-NP I-PER", "Blackburn NNP I-NP PERSON"), encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}:9: malformed CoNLL line: expected an IOB2 tag .* found 'PERSON'"):
        read_ner(path)
    # IOB1: an entity that starts with I- (strict IOB2 scoring would drop it from the gold entities).
    path.write_text(CONLL.replace("Peter NNP I-NP B-PER", "Peter NNP I-NP I-PER"), encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}:8: 'I-PER' after 'O' starts no entity in IOB2"):
        read_ner(path)
    assert len(read_ner(path, labelled=False)) == 3  # unlabelled reading ignores the tags


def test_tokens_alone_are_read_for_prediction_and_refused_for_training(tmp_path: Path) -> None:
    """predict was refused a file of tokens (one a line) for its missing tag column, the column it asks for."""
    path = tmp_path / "tokens.txt"
    path.write_text("EU\nrejects\n\nPeter\nBlackburn\n", encoding="utf-8")
    examples = read_ner(path, labelled=False)
    assert [(ex.id, ex.words, ex.tags) for ex in examples] == [
        ("tokens-d0-s0", ("EU", "rejects"), None),
        ("tokens-d0-s1", ("Peter", "Blackburn"), None),
    ]
    with pytest.raises(DataError, match=rf"{path}:1: malformed CoNLL line: expected an IOB2 tag .* the token alone"):
        read_ner(path)


def test_a_first_line_missing_its_tag_is_that_lines_error(tmp_path: Path) -> None:
    """The column count came from the first line: one missing its tag made every other line the error."""
    path = tmp_path / "firstbad.txt"
    path.write_text("EU\nrejects O\nGerman B-MISC\n\nPeter B-PER\nBlackburn I-PER\n", encoding="utf-8")
    items = list(read_conll(path))
    assert isinstance(items[0], ReadError) and items[0].source == f"{path}:1"
    assert items[0].reason == "expected 2 columns, found 1: 'EU'"
    assert isinstance(items[1], ConllSentence) and items[1].labels == ("B-PER", "I-PER")
    # A first line with one column too many is its own error too: most lines decide.
    path.write_text("EU B-ORG x\nrejects O\nGerman B-MISC\n\nPeter B-PER\nBlackburn I-PER\n", encoding="utf-8")
    first, second = list(read_conll(path))
    assert isinstance(first, ReadError) and first.reason == "expected 2 columns, found 3: 'EU B-ORG x'"
    assert isinstance(second, ConllSentence)


def test_label_unseen_in_training_is_an_error_naming_the_line(tmp_path: Path) -> None:
    train, dev = tmp_path / "train.txt", tmp_path / "dev.txt"
    train.write_text(CONLL, encoding="utf-8")
    dev.write_text("Oslo NNP I-NP O\nis VBZ I-VP O\nnice JJ I-NP B-ADJ\n", encoding="utf-8")
    task = NerTask()
    labels = task.labels(task.read(train))
    with pytest.raises(DataError, match=rf"{dev}:3: label 'B-ADJ' was not seen in training \(known labels: O, "):
        task.check_labels(task.read(dev), labels)
    claims = tmp_path / "claims.jsonl"
    claims.write_text('{"id": "a", "text": "x", "label": "YES"}\n{"id": "b", "text": "y", "label": "MAYBE"}\n')
    cls = ClassificationTask()
    with pytest.raises(DataError, match=rf"{claims}:2: label 'MAYBE' was not seen in training \(known labels: YES\)"):
        cls.check_labels(cls.read(claims), cls.labels(cls.read(claims)[:1]))


@pytest.mark.parametrize("content", ["", "\n\n", "-DOCSTART- -X- -X- O\n\n"])
def test_empty_conll_data_set_is_an_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}: empty data set"):
        read_ner(path)


def test_classification_jsonl_fields_ids_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "claims.jsonl"
    path.write_text(
        '{"id": "7", "claim": "Aspirin helps.", "label": "SUPPORT", "ctx": "trial"}\n\n'
        '{"claim": "No effect.", "label": "CONTRADICT"}\n',
        encoding="utf-8",
    )
    examples = read_classification(path, text_field="claim", pair_field="ctx")
    assert [(ex.id, ex.label, ex.pair_words) for ex in examples] == [
        ("7", "SUPPORT", ("trial",)),
        (content_id("No effect."), "CONTRADICT", None),
    ]
    path.write_text('{"claim": "ok", "label": "A"}\n{"claim": "", "label": "B"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}:2: missing or empty text field 'claim'"):
        read_classification(path, text_field="claim")
    path.write_text('{"text": "ok", "label": "A"}\n{"text": "ok", "label": \n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}:2: malformed JSON"):
        read_classification(path)
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}: empty data set"):
        read_classification(path)


def test_classification_jsonl_with_utf8_bom_is_read(tmp_path: Path) -> None:
    # Editors on Windows write a BOM; the corpus reader takes such a file, so the task reader does too.
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "ok", "label": "A"}\n')
    assert [(ex.text, ex.label) for ex in read_classification(path)] == [("ok", "A")]


def test_classification_invalid_utf8_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "ok", "label": "A"}\n{"text": "caf\xff", "label": "B"}\n')
    with pytest.raises(DataError, match=rf"^{path}:2: invalid UTF-8"):
        read_classification(path)


def test_classification_lone_surrogate_names_file_and_line(tmp_path: Path) -> None:
    # Valid JSON, but no UTF-8 output (the tokenizer) can hold the string.
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok", "label": "A"}\n{"text": "x \\ud800 y", "label": "B"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{path}:2: escaped lone surrogate"):
        read_classification(path)


def test_classification_lone_cr_is_json_whitespace_not_a_line_break(tmp_path: Path) -> None:
    # Lines end at \n only, as in the corpus reader, so later line numbers agree between the two.
    path = tmp_path / "cr.jsonl"
    path.write_text('{"text": "ok",\r"label": "A"}\n{"text": "ok", "label": \n', encoding="utf-8", newline="")
    with pytest.raises(DataError, match=rf"^{path}:2: malformed JSON"):
        read_classification(path)
    path.write_text('{"text": "ok",\r"label": "A"}\r\n', encoding="utf-8", newline="")
    assert [(ex.text, ex.label) for ex in read_classification(path)] == [("ok", "A")]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ('"label": ["A"]', "label field 'label' is a list, not one class"),
        ('"label": " "', "empty label field 'label'"),
        ('"label": "A", "id": {"a": 1}', "id field 'id' is a dict; it must be a string or an integer"),
        ('"label": "A", "id": false', "id field 'id' is a bool; it must be a string or an integer"),
        ('"label": "A", "text_pair": 3', "text pair field 'text_pair' is a int, not a string"),
    ],
)
def test_classification_values_of_the_wrong_type_name_file_line_and_field(
    tmp_path: Path, fields: str, error: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(f'{{"text": "ok", "label": "A"}}\n{{"text": "ok", {fields}}}\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{path}:2: {error}$"):
        read_classification(path)


def test_classification_labels_of_any_scalar_are_classes(tmp_path: Path) -> None:
    """BoolQ's true/false and a pandas-written 1.0 are classes, as they were before the reader checked types."""
    path = tmp_path / "labels.jsonl"
    path.write_text('{"text": "a", "label": true}\n{"text": "b", "label": false}\n{"text": "c", "label": 1.0}\n')
    assert [ex.label for ex in read_classification(path)] == ["True", "False", "1.0"]


def test_classification_ids_are_read_as_the_corpus_reader_reads_them(tmp_path: Path) -> None:
    """Without an id the line number stood in, where retrieve (the corpus reader) hashes the text: a cache made
    for such a file matched none of its examples."""
    path = tmp_path / "ids.jsonl"
    path.write_text(
        '{"id": 7, "text": "a", "label": 1}\n{"id": null, "text": "b", "label": "B"}\n'
        '{"id": "", "text": "c", "label": "B", "text_pair": null}\n{"text": "d", "label": "B"}\n',
        encoding="utf-8",
    )
    examples = read_classification(path)
    assert [(ex.label, ex.pair_words) for ex in examples] == [("1", None), ("B", None), ("B", None), ("B", None)]
    assert [ex.id for ex in examples] == [r.id for r in read_corpus(path) if isinstance(r, Record)]
    assert examples[0].id == "7"


def test_classification_ids_are_one_an_example(tmp_path: Path) -> None:
    """Both trained while the cache held one entry for the two (retrieve skips the second), so a fusion with passages
    sent the user back to the retrieve command that had made it. Lines without ids and the same text share an entry
    rightly (the same query), and stay."""
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": 0, "text": "a", "label": "X"}\n{"id": "0", "text": "b", "label": "Y"}\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_classification(path)
    assert str(err.value) == f"{path}:2: id '0' again (first at line 1); each example needs its own id"
    path.write_text('{"text": "same", "label": "X"}\n{"text": "same", "label": "Y"}\n', encoding="utf-8")
    assert [ex.label for ex in read_classification(path)] == ["X", "Y"]


def test_ner_metrics_are_entity_level() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "O"]]
    metrics = ner_metrics(gold, pred)
    # Three gold entities; the truncated PER span is wrong, LOC and ORG are right.
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["per_type"]["PER"]["f1"] == 0.0 and metrics["per_type"]["LOC"]["f1"] == 1.0
    assert "LOC" in metrics["report"] and "micro avg" in metrics["report"]


def test_ner_metrics_without_any_entity_are_zero_not_a_crash() -> None:
    # A file without entities, predicted all O (evaluate-model on it ended in seqeval's traceback).
    metrics = ner_metrics([["O", "O"]], [["O", "O"]])
    assert (metrics["f1"], metrics["precision"], metrics["recall"], metrics["per_type"]) == (0.0, 0.0, 0.0, {})
    assert metrics["report"] == "no entities in the gold tags or the predictions"
    # One predicted entity is enough for seqeval's table again.
    assert "PER" in ner_metrics([["O", "O"]], [["B-PER", "O"]])["per_type"]


def test_classification_metrics() -> None:
    metrics = classification_metrics(["A", "A", "B", "C"], ["A", "B", "B", "C"])
    assert metrics["accuracy"] == 0.75
    # F1 per label: A 2/3, B 2/3, C 1.
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert "macro avg" in metrics["report"]


def test_every_task_type_the_config_accepts_has_its_task_and_labelling() -> None:
    assert set(TASKS) == set(LABELLINGS) == set(typing.get_args(typing.get_type_hints(TaskSettings)["type"]))
    settings = TaskSettings(type="classification", text_field="claim", label_field="verdict")
    assert task_of(settings) == ClassificationTask("claim", "verdict", "text_pair", "id")
    assert task_of(TaskSettings()).main_metric == "f1" and task_of(settings).main_metric == "macro_f1"
