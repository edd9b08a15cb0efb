"""Data layer: loaders for every format, the Arrow schema, bad-input errors."""

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from tkre.data import (ARROW_SCHEMA, RelationExample, example_from_generic, example_to_generic, from_arrow,
                       load_dataset, to_arrow)
from tkre.data.loaders import TACRED_RELATIONS
from tkre.errors import DataError

FIX = Path(__file__).parent / "fixtures"


def test_semeval_counts_and_labels(semeval):
    assert {s: len(v) for s, v in semeval.splits.items()} == {"train": 6507, "dev": 1493, "test": 2717}
    assert len(semeval.relations) == 19 and semeval.relations[0] == "Other"
    assert semeval.no_relation == "Other"
    ex = semeval.splits["train"][0]
    # first line of train.txt: subject "play" at token 2, object "humor" at token 8, end exclusive
    assert (ex.subject, ex.object, ex.relation) == ("play", "humor", "Component-Whole(e2,e1)")
    assert ex.subj_end - ex.subj_start == 1 and ex.source == "golden"


def test_semeval_arrow_schema_round_trip(semeval):
    table = semeval.arrow("dev")
    assert table.schema.equals(ARROW_SCHEMA)
    assert table.num_rows == 1493
    assert from_arrow(table) == semeval.splits["dev"]


def test_tacred_inclusive_ends_become_exclusive():
    ds = load_dataset("tacred", FIX / "tacred")
    ex = next(e for e in ds.splits["train"] if e.id == "fx-tr-01")
    assert ex.subject == "Maria Lopez" and ex.object == "Valencia"
    assert (ex.subj_start, ex.subj_end, ex.obj_start, ex.obj_end) == (0, 2, 5, 6)
    assert (ex.subj_type, ex.obj_type) == ("PERSON", "CITY")
    assert len(ds.relations) == 42 == len(set(TACRED_RELATIONS))


def test_na_is_no_relation():
    ds = load_dataset("tacred", FIX / "tacred")
    assert next(e for e in ds.splits["train"] if e.id == "fx-tr-08").relation == "no_relation"


def test_tacrev_patch_applied_by_id():
    base = load_dataset("tacred", FIX / "tacred")
    rev = load_dataset("tacrev", FIX / "tacred", FIX / "tacrev_patch")
    rel = {e.id: e.relation for e in rev.splits["dev"] + rev.splits["test"]}
    assert rel["fx-dv-02"] == "per:employee_of" and rel["fx-te-01"] == "per:cities_of_residence"
    assert rel["fx-dv-01"] == "per:city_of_birth"  # untouched
    assert rev.splits["train"] == base.splits["train"]
    assert rev.data_hash != base.data_hash


def test_tacrev_shipped_patch_id_missing_is_an_error():
    # the real TACREV patch names TACRED ids that the fixture does not have
    with pytest.raises(DataError) as e:
        load_dataset("tacrev", FIX / "tacred")
    assert "dev_patch.json" in str(e.value) and e.value.field == "id" and e.value.record


def test_shipped_tacrev_patch_sizes():
    from tkre.data.loaders import shipped_dir
    assert len(json.loads((shipped_dir("tacrev") / "dev_patch.json").read_text())) == 1590
    assert len(json.loads((shipped_dir("tacrev") / "test_patch.json").read_text())) == 936


def test_retacred_relabels_and_drops_absent_ids():
    ds = load_dataset("retacred", FIX / "tacred", FIX / "retacred_patch")
    assert [e.id for e in ds.splits["dev"]] == ["fx-dv-01", "fx-dv-03"]  # fx-dv-02 dropped
    assert "fx-tr-08" not in {e.id for e in ds.splits["train"]}
    assert ds.relations[0] == "no_relation" and "per:employee_of" in ds.relations


def test_retacred_needs_patch():
    with pytest.raises(DataError, match="patch"):
        load_dataset("retacred", FIX / "tacred")


def _write_generic(dir_: Path, rows_by_split):
    dir_.mkdir(parents=True, exist_ok=True)
    for split, rows in rows_by_split.items():
        (dir_ / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _generic(text, subj, obj, rel, **kw):
    s, o = text.index(subj), text.index(obj)
    return {"text": text, "subj": subj, "subj_start": s, "subj_end": s + len(subj), "obj": obj,
            "obj_start": o, "obj_end": o + len(obj), "relation": rel, **kw}


def test_generic_jsonl_char_offsets_to_tokens(tmp_path):
    row = _generic("The engine's pistons (steel) moved.", "engine", "pistons", "Component-Whole(e2,e1)")
    ex = example_from_generic(row, file="x", record=1)
    assert ex.subject == "engine" and ex.object == "pistons"
    assert ex.tokens[ex.subj_end] == "'"  # split at the entity boundary, not inside the entity
    back = example_from_generic(example_to_generic(ex), file="x", record=1)
    assert back == ex


def test_jsonl_dataset_and_unknown_dev_label(tmp_path):
    good = _generic("Ann founded Zeta in Rome .", "Ann", "Zeta", "org:founded_by")
    _write_generic(tmp_path / "ok", {"train": [good], "dev": [good], "test": [good]})
    ds = load_dataset("jsonl", tmp_path / "ok")
    assert ds.relations == ["org:founded_by"] and len(ds.splits["test"]) == 1
    bad = dict(good, relation="per:spouse")
    _write_generic(tmp_path / "bad", {"train": [good], "dev": [good, bad], "test": [good]})
    with pytest.raises(DataError) as e:
        load_dataset("jsonl", tmp_path / "bad")
    assert "dev.jsonl" in str(e.value) and e.value.record == "line 2" and e.value.field == "relation"


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("relation"), "relation"),
    (lambda d: d.update(subj_end=999), "subj_start"),
    (lambda d: d.update(subj="Bob"), "subj"),
])
def test_generic_bad_records_name_file_line_field(tmp_path, mutate, field):
    row = _generic("Ann founded Zeta in Rome .", "Ann", "Zeta", "org:founded_by")
    mutate(row)
    _write_generic(tmp_path, {"train": [_generic("Ann founded Zeta .", "Ann", "Zeta", "x"), row]})
    with pytest.raises(DataError) as e:
        from tkre.data import load_jsonl_split
        load_jsonl_split(tmp_path / "train.jsonl")
    assert e.value.file.endswith("train.jsonl") and e.value.record == "line 2" and e.value.field == field


def _copy_tacred(tmp_path):
    dst = tmp_path / "tacred"
    shutil.copytree(FIX / "tacred", dst)
    return dst


def test_tacred_offsets_outside_tokens(tmp_path):
    d = _copy_tacred(tmp_path)
    data = json.loads((d / "dev.json").read_text())
    data[1]["obj_end"] = 40
    (d / "dev.json").write_text(json.dumps(data))
    with pytest.raises(DataError) as e:
        load_dataset("tacred", d)
    assert e.value.file.endswith("dev.json") and e.value.record == "fx-dv-02" and e.value.field == "obj_end"


def test_tacred_missing_field_unknown_label_truncated_empty(tmp_path):
    d = _copy_tacred(tmp_path)
    data = json.loads((d / "test.json").read_text())
    del data[0]["subj_type"]
    (d / "test.json").write_text(json.dumps(data))
    with pytest.raises(DataError) as e:
        load_dataset("tacred", d)
    assert (e.value.record, e.value.field) == ("fx-te-01", "subj_type")

    data = json.loads((FIX / "tacred" / "test.json").read_text())
    data[1]["relation"] = "per:favourite_colour"
    (d / "test.json").write_text(json.dumps(data))
    with pytest.raises(DataError) as e:
        load_dataset("tacred", d)
    assert (e.value.record, e.value.field) == ("fx-te-02", "relation")

    (d / "test.json").write_text((FIX / "tacred" / "test.json").read_text()[:200])
    with pytest.raises(DataError, match="truncated JSON") as e:
        load_dataset("tacred", d)
    assert e.value.file.endswith("test.json")

    (d / "test.json").write_text("[]")
    with pytest.raises(DataError, match="empty"):
        load_dataset("tacred", d)


def test_unknown_dataset_and_missing_path():
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("fewrel")
    with pytest.raises(DataError, match="--path"):
        load_dataset("tacred")


def test_record_problems():
    ex = RelationExample("a", ("x", "y"), 0, 1, 1, 3, "r")
    assert ex.problems() and ex.problems()[0][0] == "obj_start/obj_end"
    assert to_arrow([RelationExample("a", ("x", "y"), 0, 1, 1, 2, "r")]).schema.equals(ARROW_SCHEMA)
    assert isinstance(to_arrow([]), pa.Table)


def test_ray_dataset_keeps_schema(semeval, ray_local):
    ds = semeval.ray_dataset("test")
    assert ds.count() == 2717
    rows = ds.take(2)
    assert rows[0]["id"] == semeval.splits["test"][0].id
    assert list(rows[0]["tokens"]) == list(semeval.splits["test"][0].tokens)
    assert set(ds.schema().names) == set(ARROW_SCHEMA.names)
