"""The encoder pools as its folder declares (sentence-transformers' ``modules.json``), never silently by mean."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from ralm_es.embed import Encoder
from ralm_es.model_folder import ModelError

TEXTS = ["statins lower cholesterol", "a much longer sentence about protein folding in the cells of the liver"]


def with_pooling(tiny_model_dir: Path, tmp_path: Path, config: dict[str, object]) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ]
        )
    )
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **config}))
    return folder


def reference_states(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Token states and mask straight from transformers, for pooling by hand."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).last_hidden_state, batch["attention_mask"]


def test_cls_pooling_folder_is_pooled_by_cls(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = with_pooling(tiny_model_dir, tmp_path, {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    encoder = Encoder(folder, device="cpu")
    states, _ = reference_states(folder)
    expected = torch.nn.functional.normalize(states[:, 0], dim=-1).numpy()
    assert encoder.pooling == "cls" and encoder.info().pooling == "cls"
    assert encoder.encode(TEXTS) == pytest.approx(expected, abs=1e-5)


def test_plain_folder_is_pooled_by_mean_over_real_tokens(tiny_model_dir: Path) -> None:
    encoder = Encoder(tiny_model_dir, device="cpu")
    states, mask = reference_states(tiny_model_dir)
    weights = mask.unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((states * weights).sum(1) / weights.sum(1), dim=-1).numpy()
    assert encoder.pooling == "mean"
    assert encoder.encode(TEXTS) == pytest.approx(expected, abs=1e-5)


def test_max_pooling_ignores_padding(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = with_pooling(tiny_model_dir, tmp_path, {"pooling_mode_max_tokens": True})
    states, mask = reference_states(folder)
    short = int(mask[0].sum())
    expected = torch.nn.functional.normalize(states[0, :short].max(0).values, dim=-1).numpy()
    assert Encoder(folder, device="cpu").encode(TEXTS)[0] == pytest.approx(expected, abs=1e-5)


def test_an_unsupported_pooling_is_an_error_naming_the_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = with_pooling(tiny_model_dir, tmp_path, {"pooling_mode_weightedmean_tokens": True})
    with pytest.raises(ModelError, match=r"1_Pooling/config\.json: pooling pooling_mode_weightedmean_tokens"):
        Encoder(folder, device="cpu")


def test_a_module_that_would_be_skipped_is_an_error_naming_the_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = with_pooling(tiny_model_dir, tmp_path, {"pooling_mode_mean_tokens": True})
    modules = json.loads((folder / "modules.json").read_text())
    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    (folder / "modules.json").write_text(json.dumps([*modules, dense]))
    with pytest.raises(ModelError, match=r"modules\.json: module Dense is not supported .*would not be the model's"):
        Encoder(folder, device="cpu")
