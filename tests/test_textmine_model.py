"""The learned relation engine: training, safe save/load, and use through the CLI."""

from __future__ import annotations

import json
from collections import Counter
from importlib import resources

import pytest

from textmine.context import RELATIONS

HANDWRITTEN = str(resources.files("textmine").joinpath("data", "relations_handwritten.jsonl"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shipped_ontology):
    """A small model trained through the CLI on the hand-annotated sentences."""
    from cli import main

    path = tmp_path_factory.mktemp("relcnn") / "relations.safetensors"
    code = main(["textmine", "train-relations", HANDWRITTEN, "-o", str(path), "--epochs", "6"])
    assert code == 0
    return path


def test_saved_as_safetensors_with_metadata(trained):
    from safetensors import safe_open

    with safe_open(str(trained), framework="pt") as handle:
        meta = handle.metadata()
        assert meta["format"] == "lesanet-relation-cnn"
        assert "<unk>" in json.loads(meta["vocab"])
        assert len(json.loads(meta["history"])) == 6


def test_learns_more_than_the_majority_class(trained, shipped_ontology):
    from textmine.pipeline import LabelMiner
    from textmine.relcnn import RelationModel, accuracy
    from textmine.training import read_training_files

    miner = LabelMiner(shipped_ontology)
    data = read_training_files(miner, [HANDWRITTEN])
    examples = data.examples
    majority = Counter(ex.relation for ex in examples).most_common(1)[0][1] / len(examples)
    model = RelationModel.load(trained)
    assert accuracy(model, examples) > majority + 0.05


def test_model_engine_run(trained, tmp_path, capsys):
    from cli import main

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "x", "text": "Right renal cyst BOOKMARK and liver mass OTHER_BMK."}) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["textmine", "run", str(src), "-o", str(out), "--engine", "model", "--model", str(trained)]) == 0
    record = json.loads(out.read_text())
    assert record["mentions"] and all(m["relation"] in RELATIONS and m["cue"] == "model" for m in record["mentions"])


def test_refuses_files_that_are_not_relation_models(tmp_path, shipped_ontology):
    import pickle

    import torch
    from safetensors.torch import save_file

    from textmine.relcnn import RelationModel

    pickled = tmp_path / "model.pt"
    pickled.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ValueError, match="not a safetensors relation model"):
        RelationModel.load(pickled)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "something-else"})
    with pytest.raises(ValueError, match="not a lesanet-relation-cnn file"):
        RelationModel.load(other)


def test_bad_training_records_are_reported(tmp_path, capsys):
    from cli import main

    bad = tmp_path / "train.jsonl"
    bad.write_text(
        json.dumps(
            {"id": 1, "text": "Liver mass BOOKMARK", "mentions": [{"start": 0, "end": 5, "relation": "relevant"}]}
        )
        + "\nnot json\n"
        + json.dumps({"id": 3, "text": "Liver mass", "mentions": [{"start": 0, "end": 5, "relation": "maybe"}]})
        + "\n"
    )
    code = main(["textmine", "train-relations", str(bad), "-o", str(tmp_path / "m.safetensors"), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 3 and f"{bad}:2: not JSON" in err and f"{bad}:3: mention 0: relation 'maybe'" in err
    assert (tmp_path / "m.safetensors").exists()
