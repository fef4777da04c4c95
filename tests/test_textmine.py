"""Text mining: label matching, relations to the bookmarked lesion, CLI, formats, dev-set score."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from textmine.pipeline import LabelMiner


@pytest.fixture(scope="session")
def miner(shipped_ontology) -> LabelMiner:
    return LabelMiner(shipped_ontology)


def mined(miner: LabelMiner, text: str, expand: bool = False):
    result = miner.mine([text], expand=expand)[0]
    assert result.error is None, result.error
    return result


def relations(miner: LabelMiner, text: str) -> dict[str, str]:
    """label -> relation of the mentions of ``text``."""
    return {m.label: m.relation for m in mined(miner, text).mentions}


# ---------------------------------------------------------------------------- matching


@pytest.mark.parametrize(
    "text, label",
    [
        ("Masses in the liver", "mass"),  # lemma table gap: "masses" -> "masse"
        ("multiple hepatic hypodensities", "hypoattenuation"),  # plural not in the table
        ("ground glass nodule", "ground-glass opacity"),  # space / hyphen variants
        ("ground-glass nodule", "ground-glass opacity"),
        ("nodule in the RLL", "right lower lobe"),  # abbreviation
        ("enlarged node", "enlargement"),  # adjective form
        ("juxtapleural nodule", "pleura"),  # prefixed location word
        ("lesion in the tail of the pancreas", "pancreatic tail"),  # articles skipped
        ("left anterior renal cyst", "left kidney"),  # side + position words + organ
        ("a mesenterric lymph node", "mesentery lymph node"),  # one-edit misspelling of a long word
        ("speculated mass", "spiculated"),  # listed dictation error
        ("non-enhancing lesion", "nonenhancing"),
        ("metastases to the liver", "metastasis"),
    ],
)
def test_label_forms(miner, text, label):
    assert label in {m.label for m in mined(miner, text).mentions}


def test_comparatives_are_not_attributes(miner):
    labels = {m.label for m in mined(miner, "the largest nodule is larger than before").mentions}
    assert "large" not in labels and "nodule" in labels


def test_longest_match_and_spans(miner):
    text = "Right lower lobe nodule BOOKMARK"
    result = mined(miner, text)
    spans = {(m.label, text[m.start : m.end]) for m in result.mentions}
    assert ("right lower lobe", "Right lower lobe") in spans
    assert all(m.iri.endswith(m.label.replace(" ", "_")) or m.iri for m in result.mentions)
    assert "lung" not in {m.label for m in result.mentions}  # "lobe" alone is no label; no shorter match


def test_nested_type_kept(miner):
    # "right hilar adenopathy" is the right hilar lymph node, and also adenopathy
    labels = {m.label for m in mined(miner, "right hilar adenopathy BOOKMARK").mentions}
    assert {"right hilum lymph node", "lymphadenopathy"} <= labels


def test_composites_come_from_the_ontology(miner, shipped_ontology):
    result = mined(miner, "Anterior renal lesion BOOKMARK, probably a cyst", expand=True)
    assert "kidney cyst" in result.uncertain  # kidney (relevant) + cyst (uncertain): inferred, hedged
    assert "kidney" in result.relevant and "kidney cyst" not in result.relevant
    plain = mined(miner, "Anterior renal lesion BOOKMARK, probably a cyst")
    assert "kidney cyst" not in plain.uncertain  # no string rule makes the composite


# ---------------------------------------------------------------------------- relations


def test_paper_example(miner):
    text = "Unchanged large nodule bilaterally for example right lower lobe OTHER_BMK and right middle lobe BOOKMARK."
    result = mined(miner, text)
    assert set(result.relevant) == {"large", "nodule", "right mid lung"}
    assert result.irrelevant == ["right lower lobe"]
    assert result.uncertain == []


@pytest.mark.parametrize(
    "text, expected",
    [
        # other lesion
        (
            "Left adrenal mass OTHER_BMK and right renal cyst BOOKMARK.",
            {"left adrenal gland": "irrelevant", "right kidney": "relevant", "kidney cyst": "relevant"},
        ),
        (
            "Liver lesions BOOKMARK, OTHER_BMK consistent with metastases.",
            {"liver": "relevant", "metastasis": "relevant"},
        ),
        (
            "Nodules in the left lower lobe OTHER_BMK and lingula BOOKMARK.",
            {"nodule": "relevant", "left lower lobe": "irrelevant", "lingula": "relevant"},
        ),
        (
            "Enlarged lymph nodes: subcarinal OTHER_BMK and right hilar BOOKMARK.",
            {"enlargement": "relevant", "lymph node": "relevant", "hilum": "relevant"},
        ),
        # negation
        ("Spleen lesion BOOKMARK without pleural effusion.", {"spleen": "relevant", "pleural effusion": "irrelevant"}),
        ("No new nodules. Liver mass BOOKMARK.", {"nodule": "irrelevant", "liver mass": "relevant"}),
        (
            "Adrenal nodule BOOKMARK, no lymphadenopathy.",
            {"adrenal gland": "relevant", "lymphadenopathy": "irrelevant"},
        ),
        # history
        (
            "Previously solid lung nodule BOOKMARK now cavitary.",
            {"solid": "irrelevant", "lung nodule": "relevant", "cavitary": "relevant"},
        ),
        (
            "The pleural effusion has resolved; mesenteric mass BOOKMARK.",
            {"pleural effusion": "irrelevant", "mass": "relevant"},
        ),
        # hedging
        ("Pancreatic lesion BOOKMARK, possibly a cyst.", {"pancreas": "relevant", "cyst": "uncertain"}),
        ("Renal mass BOOKMARK, probably an angiomyolipoma.", {"angiomyolipoma": "uncertain"}),
        ("Liver lesion BOOKMARK, likely hemangioma.", {"hemangioma": "uncertain"}),
        ("Splenic mass BOOKMARK that may represent an abscess.", {"abscess": "uncertain", "spleen": "relevant"}),
        ("Lung nodule BOOKMARK suspicious for metastasis.", {"metastasis": "uncertain"}),
        ("Omental nodule BOOKMARK concerning for implant.", {"implant": "uncertain", "omentum": "relevant"}),
        ("Mediastinal mass BOOKMARK; cannot exclude lymphadenopathy.", {"lymphadenopathy": "uncertain"}),
        (
            "Pleural thickening BOOKMARK, mesothelioma not excluded.",
            {"mesothelioma": "uncertain", "thickening": "relevant"},
        ),
        ("Questionable hepatic lesion BOOKMARK.", {"liver": "uncertain"}),
        ("Adrenal mass BOOKMARK, differential includes adenoma.", {"adenoma": "uncertain"}),
        ("Groin mass BOOKMARK versus hernia.", {"hernia": "uncertain"}),
        (
            "Right lower lobe opacity BOOKMARK, atelectasis or consolidation.",
            {"atelectasis": "uncertain", "consolidation": "uncertain", "opacity": "relevant"},
        ),
        # assertions and comparisons are not hedges
        ("Fat-containing renal mass BOOKMARK consistent with angiomyolipoma.", {"angiomyolipoma": "relevant"}),
        ("Uterine mass BOOKMARK compatible with fibroid.", {"leiomyoma": "relevant"}),
        ("Adrenal nodule BOOKMARK measures 2.3 x 2.1 cm versus 1.9 cm previously.", {"adrenal gland": "relevant"}),
        # landmarks are not the lesion's site
        ("Pelvic mass BOOKMARK displacing the bladder.", {"pelvis": "relevant", "urinary bladder": "irrelevant"}),
        ("Nodule medial to the spleen BOOKMARK.", {"nodule": "relevant", "spleen": "irrelevant"}),
    ],
)
def test_relation_kinds(miner, text, expected):
    got = relations(miner, text)
    for label, relation in expected.items():
        assert got.get(label) == relation, (text, label, got)


def test_no_bookmark_describes_the_lesion(miner):
    result = mined(miner, "Left hepatic cyst")
    assert {"liver", "cyst"} <= set(result.relevant)


def test_expand_lists(miner, shipped_ontology):
    result = mined(miner, "Right renal lesion BOOKMARK, possibly a cyst; no pleural effusion.", expand=True)
    assert {"kidney", "right kidney", "abdomen"} <= set(result.relevant)
    assert "cyst" in result.uncertain and not set(result.uncertain) & set(result.relevant)
    assert "pleural effusion" in result.irrelevant and "chest" not in result.irrelevant


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "raw, message",
    [
        (b'{"id": 1, "text": ""}', "empty text"),
        (b'{"id": 1, "text": "mass BOOKMARK and nodule BOOKMARK"}', "2 BOOKMARK tokens"),
        (b'{"id": 1, "text": "mass OTHER_BMK"}', "OTHER_BMK without BOOKMARK"),
        (b'{"id": 1, "text": "caf\xe9 mass"}', "not UTF-8"),
        (b'{"id": 1, "text": "' + b"a" * (1 << 20) + b'"}', "byte limit"),
        (b"this is not json", "not JSON"),
        (b'["a list"]', "expected an object"),
        (b'{"text": "mass"}', "id"),
        (b"", "empty line"),
    ],
)
def test_bad_records(miner, raw, message):
    from textmine.records import read_jsonl

    stream = io.BytesIO(
        b'{"id": "a", "text": "liver mass BOOKMARK"}\n' + raw + b'\n{"id": "b", "text": "renal cyst"}\n'
    )
    out = list(miner.mine_records(read_jsonl(stream)))
    assert len(out) == 3
    assert out[0].error is None and out[2].error is None and "kidney cyst" in out[2].relevant
    assert out[1].error is not None and message in out[1].error and out[1].line == 2


# ---------------------------------------------------------------------------- CLI


def _run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from cli import main

    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_run_file(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        b'{"id": "1", "lesion_idx": 7, "text": "Right renal cyst BOOKMARK, no hydronephrosis.", "extra": 1}\n'
        b"not json\n"
        b'{"id": "3", "text": "Enlarged mediastinal lymph node BOOKMARK"}\n'
    )
    out = tmp_path / "out.jsonl"
    code, _, err = _run_cli(["textmine", "run", str(src), "-o", str(out), "--expand"], capsys)
    assert code == 3 and f"{src}:2: not JSON" in err and "1 of 3 records failed" in err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["1", None, "3"]
    assert lines[0]["lesion_idx"] == 7 and "kidney cyst" in lines[0]["relevant"] and "chest" not in lines[0]["relevant"]
    assert lines[0]["irrelevant"] == ["hydronephrosis"]
    mention = lines[0]["mentions"][0]
    assert set(mention) >= {"start", "end", "text", "label", "iri", "relation", "cue"}
    assert lines[1]["error"].startswith("not JSON") and lines[1]["line"] == 2
    assert "mediastinum lymph node" in lines[2]["relevant"]


def test_cli_run_stdin_stdout(monkeypatch, capsys):
    data = b'{"id": 1, "text": "Left adrenal nodule BOOKMARK"}\n'
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, _ = _run_cli(["textmine", "run", "-", "-o", "-"], capsys)
    assert code == 0
    record = json.loads(out)
    assert record["id"] == 1 and "left adrenal gland" in record["relevant"]


def test_cli_errors(tmp_path, capsys):
    code, _, err = _run_cli(["textmine", "run", str(tmp_path / "missing.jsonl"), "-o", "-"], capsys)
    assert code == 1 and "missing.jsonl" in err
    code, _, err = _run_cli(["textmine", "eval", str(tmp_path / "missing.json"), "--engine", "model"], capsys)
    assert code == 1 and "--model" in err


def test_cli_eval_relations(capsys):
    from importlib import resources

    gold = str(resources.files("textmine").joinpath("data", "relations_handwritten.jsonl"))
    code, out, _ = _run_cli(["textmine", "eval", gold, "--json"], capsys)
    result = json.loads(out)
    assert code == 0 and result["texts"] >= 100
    matrix = result["confusion"]["matrix"]
    assert sum(map(sum, matrix)) > result["texts"]
    assert result["relevant"]["f1"] > 0.9 and result["uncertain"]["f1"] > 0.8


def test_cli_build_split(tmp_path, capsys, shipped_ontology):
    mined_file = tmp_path / "mined.jsonl"
    rows = [
        {"id": "a", "lesion_idx": 3, "relevant": ["kidney", "cyst"], "uncertain": ["mass"], "irrelevant": ["liver"]},
        {"id": "b", "lesion_idx": 3, "relevant": ["mass"], "uncertain": [], "irrelevant": []},
        {"id": "c", "lesion_idx": 5, "relevant": ["lung"], "uncertain": [], "irrelevant": [], "split": "test"},
        {"id": "d", "relevant": ["lung"], "uncertain": [], "irrelevant": []},
        {"id": "e", "lesion_idx": 9, "error": "empty text", "relevant": [], "uncertain": [], "irrelevant": []},
    ]
    mined_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reference = tmp_path / "ref.json"
    reference.write_text(json.dumps({"train_lesion_idxs": [3], "val_lesion_idxs": [], "test_lesion_idxs": [5]}))
    out = tmp_path / "split.json"
    code, _, err = _run_cli(
        ["textmine", "build-split", str(mined_file), "-o", str(out), "--reference", str(reference)], capsys
    )
    assert code == 3 and ":4: no `lesion_idx`" in err and ":5: skipped" in err and "2 of 5 records skipped" in err
    data = json.loads(out.read_text())
    terms = data["term_list"]
    assert terms == shipped_ontology.label_set("lesanet171")
    assert data["train_lesion_idxs"] == [3] and data["test_lesion_idxs"] == [5]
    names = lambda ids: {terms[i] for i in ids}  # noqa: E731
    assert names(data["train_relevant_labels"][0]) == {"kidney", "cyst", "mass"}
    assert data["train_uncertain_labels"][0] == []
    assert names(data["train_irrelevant_labels"][0]) == {"liver"}
    assert set(data) == {
        "term_list",
        "train_lesion_idxs",
        "val_lesion_idxs",
        "test_lesion_idxs",
        "train_relevant_labels",
        "val_relevant_labels",
        "test_relevant_labels",
        "train_uncertain_labels",
        "val_uncertain_labels",
        "test_uncertain_labels",
        "train_irrelevant_labels",
    }


# ---------------------------------------------------------------------------- dev set


def test_hand_labeled_dev_scores(miner, lesanet_data: Path):
    from textmine.evaluate import load_hand_labeled, score_hand_labeled

    scores = score_hand_labeled(miner, load_hand_labeled(lesanet_data / "hand_labeled_dev.json"))
    assert scores.n_texts == 250 and not scores.errors
    # measured 0.960 micro / 0.934 macro (docs/benchmarks.md); the plain lookup scores 0.929 / 0.864
    assert scores.micro.f1 >= 0.955
    assert scores.macro()["f1"] >= 0.92
