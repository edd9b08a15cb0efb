"""Label sets as the data brings them: TACRED-format data with its own labels, data without a
no-relation class, and labels only dev/test carry (kept, warned about once, `Dataset.eval_only`) --
the same behaviour in every loader."""

import json
import shutil
from pathlib import Path

import pytest

from tkre.data import load_dataset
from tkre.data.loaders import TACRED_RELATIONS
from tkre.errors import DataError

FIX = Path(__file__).parent / "fixtures"


def _copy_tacred(tmp_path):
    dst = tmp_path / "tacred"
    shutil.copytree(FIX / "tacred", dst)
    return dst


def _write_generic(dir_: Path, rows_by_split):
    dir_.mkdir(parents=True, exist_ok=True)
    for split, rows in rows_by_split.items():
        (dir_ / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _generic(text, subj, obj, rel):
    s, o = text.index(subj), text.index(obj)
    return {"text": text, "subj": subj, "subj_start": s, "subj_end": s + len(subj), "obj": obj,
            "obj_start": o, "obj_end": o + len(obj), "relation": rel}


# ---------------------------------------------------------------- TACRED format, own labels (issue 13, item 14)

def test_tacred_format_with_its_own_16_labels_loads_with_them_and_says_so(caplog):
    import logging

    from tkre.data import tacred
    tacred._announced.clear()
    with caplog.at_level(logging.INFO, logger="tkre.data"):
        ds = load_dataset("tacred", FIX / "tacred_own16")
        load_dataset("tacred", FIX / "tacred_own16")  # said once per process, not on every load
    assert len(ds.relations) == 16 and ds.relations[0] == "no_relation" == ds.no_relation
    assert {"per:identity", "org:city_of_branch", "per:spouse"} <= set(ds.relations)
    lines = [r.getMessage() for r in caplog.records if r.name == "tkre.data"]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "own label set" in lines[0] and "16 relations" in lines[0] and "tacred_own16" in lines[0]
    assert len(ds.splits["train"]) == 17 and ds.splits["test"][0].relation == "org:city_of_branch"


def test_real_tacred_labels_keep_the_42_label_check(tmp_path):
    ds = load_dataset("tacred", FIX / "tacred")  # a subset of the 42 -> TACRED's label set
    assert list(ds.relations) == list(TACRED_RELATIONS)
    d = _copy_tacred(tmp_path)
    data = json.loads((d / "dev.json").read_text())
    data[0]["relation"] = "per:identity"  # a typo/foreign label in dev of TACRED data stays an error
    (d / "dev.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="TACRED's 42") as e:
        load_dataset("tacred", d)
    assert (e.value.record, e.value.field) == ("fx-dv-01", "relation")


def test_own_label_set_is_the_train_splits_and_test_only_labels_are_kept(tmp_path, caplog):
    import logging
    d = tmp_path / "own"
    shutil.copytree(FIX / "tacred_own16", d)
    data = json.loads((d / "test.json").read_text())
    data[1]["relation"] = "per:favourite_colour"
    (d / "test.json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="tkre.data"):
        ds = load_dataset("tacred", d)
        load_dataset("tacred", d)  # warned once per process, not on every load
    assert "per:favourite_colour" not in ds.relations and len(ds.relations) == 16  # no class for it
    assert ds.eval_only == {"per:favourite_colour": 1}
    assert next(e for e in ds.splits["test"] if e.id == "own-te-02").relation == "per:favourite_colour"
    said = [r.getMessage() for r in caplog.records if "only dev/test carry" in r.getMessage()]
    assert len(said) == 1 and "per:favourite_colour (1)" in said[0] and "inevitable misses" in said[0]


def test_semeval_label_without_train_example_is_the_same_behaviour(semeval):
    # declared by rel2id.json, so a class of the label set, but only dev/test carry it
    assert semeval.eval_only == {"Entity-Destination(e2,e1)": 2}
    assert "Entity-Destination(e2,e1)" in semeval.relations


def _write_jsonl_dir(root: Path, rows: dict, relations=None) -> Path:
    _write_generic(root, rows)
    if relations is not None:
        (root / "relations.json").write_text(json.dumps(relations))
    return root


def test_jsonl_without_no_relation_class_and_a_dev_only_label(tmp_path):
    a = _generic("Ada wrote Notes .", "Ada", "Notes", "wrote")
    b = _generic("Bo lives in Oslo .", "Bo", "Oslo", "lives_in")
    c = _generic("Cy owns Dot .", "Cy", "Dot", "owns")
    d = _write_jsonl_dir(tmp_path / "own", {"train": [a, b], "dev": [a, c], "test": [b]})
    ds = load_dataset("jsonl", d)
    assert ds.no_relation is None and ds.relations == ["lives_in", "wrote"]
    assert ds.eval_only == {"owns": 1} and ds.splits["dev"][1].relation == "owns"
    assert ds.splits["train"][0].subj_type is None  # untyped entities stay untyped
    # a no-relation class only dev/test carry is still the class micro-F1 leaves out
    d2 = _write_jsonl_dir(tmp_path / "na", {"train": [a, b], "dev": [a], "test": [b | {"relation": "NA"}]})
    ds2 = load_dataset("jsonl", d2)
    assert ds2.no_relation == "no_relation" and "no_relation" not in ds2.relations
    assert ds2.eval_only == {"no_relation": 1}
    # relations.json declares the label set: a label outside it is an error (a typo), one in it is not
    d3 = _write_jsonl_dir(tmp_path / "declared", {"train": [a, b], "dev": [a, c], "test": [b]},
                          relations=["wrote", "lives_in"])
    with pytest.raises(DataError, match="not in relations.json") as e:
        load_dataset("jsonl", d3)
    assert e.value.file.endswith("dev.jsonl") and e.value.field == "relation"
    (d3 / "relations.json").write_text(json.dumps(["wrote", "lives_in", "owns"]))
    ds3 = load_dataset("jsonl", d3)
    assert ds3.relations == ["wrote", "lives_in", "owns"] and ds3.eval_only == {"owns": 1}
    assert ds3.no_relation is None


def test_tacrev_patch_over_own_labels_uses_them(tmp_path):
    patch = tmp_path / "patch"
    patch.mkdir()
    (patch / "dev_patch.json").write_text(json.dumps([{"id": "own-dv-03", "relation": "per:identity"}]))
    (patch / "test_patch.json").write_text(json.dumps([{"id": "own-te-03", "relation": "per:title"}]))
    ds = load_dataset("tacrev", FIX / "tacred_own16", patch)
    assert len(ds.relations) == 16 and ds.splits["dev"][2].relation == "per:identity"
    (patch / "test_patch.json").write_text(json.dumps([{"id": "own-te-03", "relation": "per:city_of_death"}]))
    with pytest.raises(DataError, match="unknown relation label"):
        load_dataset("tacrev", FIX / "tacred_own16", patch)
