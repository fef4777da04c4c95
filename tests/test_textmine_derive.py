"""The derivational layer, name composites, over-inference guards and cross-validation of the miner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from textmine.derive import derivation_rules, derivations, name_composites
from textmine.lexicon import known_phrases
from textmine.pipeline import LabelMiner


@pytest.fixture(scope="module")
def miner(shipped_ontology) -> LabelMiner:
    return LabelMiner(shipped_ontology)


@pytest.fixture(scope="module")
def derived(shipped_ontology) -> dict[str, tuple[str, ...]]:
    return {d.phrase: d.labels for d in derivations(shipped_ontology, known_phrases(shipped_ontology))}


def mined(miner: LabelMiner, text: str, expand: bool = False):
    result = miner.mine([text], expand=expand)[0]
    assert result.error is None, result.error
    return result


@pytest.mark.parametrize(
    "phrase, labels",
    [
        ("perifissural", ("fissure",)),  # beside a sheet: on it
        ("subdiaphragmatic", ("diaphragm",)),
        ("perihepatic", ()),  # beside an organ: not in it (next_to_organ: neither)
        ("perinephric", ()),  # combining form of kidney
        ("intrahepatic", ("liver",)),  # within
        ("epicardial", ("cardiac",)),  # upon
        ("diffusely", ("diffuse",)),  # adverb
        ("enhanced", ("enhancing",)),  # participle
        ("stenotic", ("stenosis",)),
        ("hyperenhanced", ("hyperattenuation",)),  # the finer term the ontology names
        ("isoenhancing", ("enhancing",)),  # no finer term: the base attribute
        ("isodense", ()),  # "dense" is hyperattenuation: iso- denies it
        ("splenic artery", ("artery",)),  # a vessel beside the spleen, not the spleen
        ("femoral vein", ("vein",)),  # not the femur
    ],
)
def test_derived_forms(derived, phrase, labels):
    assert derived[phrase] == labels


def test_names_win_over_derivation(derived, shipped_ontology):
    known = known_phrases(shipped_ontology)
    for phrase in ("paraspinal", "subpleural", "retroperitoneal", "perihilar", "renal artery", "juxtapleural"):
        assert phrase in known and phrase not in derived
    assert "largely" not in derived  # not_derived: means "mostly"
    every_label = {label for labels in derived.values() for label in labels}
    assert every_label <= set(shipped_ontology.terms)


def test_an_ontology_edit_regenerates_the_forms(shipped_ontology, tmp_path):
    from ontology import load_ontology

    ttl = shipped_ontology.serialize("ttl").replace('"splenic lesion"', '"splenic lesion", "lienal"', 1)
    path = tmp_path / "edited.ttl"
    path.write_text(ttl, encoding="utf-8")
    edited = load_ontology(path)
    forms = {d.phrase: d.labels for d in derivations(edited, known_phrases(edited))}
    assert forms["intralienal"] == ("spleen",) and forms["perilienal"] == ()
    assert "intralienal" not in {d.phrase for d in derivations(shipped_ontology, known_phrases(shipped_ontology))}


def test_next_to_organ_region_rule(shipped_ontology):
    rules = dict(derivation_rules(), next_to_organ="region")
    forms = {d.phrase: d.labels for d in derivations(shipped_ontology, known_phrases(shipped_ontology), rules=rules)}
    assert forms["perihepatic"] == ("upper abdomen",)
    assert set(forms["perinephric"]) == {"upper abdomen", "retroperitoneum"}
    assert forms["perifissural"] == ("fissure",)  # a sheet is still itself
    with pytest.raises(ValueError, match="next_to_organ"):
        derivations(shipped_ontology, {}, rules=dict(rules, next_to_organ="organ"))


def test_name_composites_are_read_off_the_ontology(shipped_ontology):
    composites = {c.term: c for c in name_composites(shipped_ontology)}
    assert composites["hilum lymph node"].location == "hilum"
    assert composites["supraclavicular lymph node"].modifier == ("supraclavicular",)
    assert "mediastinum lymph node" not in composites  # an ontology composite: onto.expand infers it


@pytest.mark.parametrize(
    "text, present, absent",
    [
        ("left hilar mass or lymphadenopathy", {"hilum lymph node", "left hilum lymph node"}, set()),
        ("small lymph node, left, neck base, supraclavicular, neck", {"supraclavicular lymph node"}, set()),
        ("Enlarged subcarinal and right paratracheal lymph nodes", {"subcarinal lymph node"}, set()),
        ("mesenteric mass", {"mesentery"}, {"mesentery lymph node"}),
        ("Splenic artery aneurysm", {"artery", "aneurysm"}, {"spleen"}),
        ("Femoral vein thrombus", {"vein", "thrombus"}, {"femur", "bone"}),
        ("Perifissural nodule in the right upper lobe", {"fissure", "right upper lobe"}, set()),
        ("Heterogeneously enhancing mass, peripherally calcified", {"heterogeneous", "enhancing", "calcified"}, set()),
    ],
)
def test_expanded_labels(miner, text, present, absent):
    s = mined(miner, text, expand=True)
    labels = set(s.relevant) | set(s.uncertain)
    assert present <= labels and not (absent & labels), (labels, s.mentions)


def test_composites_stay_with_their_lesion(miner):
    s = mined(miner, "Hilar lymphadenopathy OTHER_BMK and a right renal cyst BOOKMARK.", expand=True)
    assert "hilum lymph node" not in s.relevant + s.uncertain and "kidney cyst" in s.relevant
    s = mined(miner, "Perifissural nodule OTHER_BMK and liver mass BOOKMARK.", expand=True)
    assert "fissure" in s.irrelevant and "fissure" not in s.relevant + s.uncertain


def test_alternatives_with_a_repeated_preposition(miner):
    s = mined(miner, "Mass BOOKMARK arising from the pancreas or from the duodenum.")
    assert set(s.uncertain) == {"pancreas", "duodenum"} and s.relevant == ["mass"]


# ---------------------------------------------------------------------------- cross-validation


def test_kfold_indices_partition():
    from textmine.crossval import kfold_indices

    folds = kfold_indices(23, 5, seed=3)
    assert sorted(i for f in folds for i in f) == list(range(23))
    assert {len(f) for f in folds} <= {4, 5} and kfold_indices(23, 5, seed=3) == folds
    with pytest.raises(ValueError):
        kfold_indices(3, 5)


def test_cli_cv_and_derivations(tmp_path, capsys):
    import cli

    gold = [
        {
            "text": "Right renal cyst",
            "expanded_terms": [
                "right kidney",
                "kidney",
                "kidney cyst",
                "cyst",
                "abdomen",
                "retroperitoneum",
                "upper abdomen",
            ],
        },
        {"text": "perihepatic fluid", "expanded_terms": ["fluid"]},
        {"text": "left hilar adenopathy", "expanded_terms": ["lymphadenopathy", "lymph node"]},  # misses hilum etc.
        {"text": "hypodense liver lesion", "expanded_terms": ["hypoattenuation", "liver", "upper abdomen", "abdomen"]},
    ]
    path = tmp_path / "gold.json"
    path.write_text(json.dumps(gold), encoding="utf-8")
    code = cli.main(["textmine", "cv", str(path), "--folds", "2", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and len(result["folds"]) == 2
    assert result["whole"]["micro"]["fn"] == 0 and result["whole"]["micro"]["fp"] > 0
    assert result["error_classes"]["extra: parent the gold lacks"] >= 1
    assert cli.main(["textmine", "cv", str(path), "--folds", "9"]) == 1
    assert "--folds" in capsys.readouterr().err
    assert cli.main(["textmine", "derivations", "--grep", "perifissural"]) == 0
    assert "fissure" in capsys.readouterr().out


def test_cross_validated_dev_scores(miner, lesanet_data: Path):
    from textmine.crossval import cross_validate
    from textmine.evaluate import load_hand_labeled

    cv = cross_validate(miner, load_hand_labeled(lesanet_data / "hand_labeled_dev.json"), k=5)
    micro, _ = cv.mean("micro")
    assert abs(micro - cv.whole.micro.f1) <= 0.01  # nothing fitted: held-out folds score as the whole set
    assert micro >= 0.955
    assert sum(cv.errors.values()) == cv.whole.micro.fp + cv.whole.micro.fn
