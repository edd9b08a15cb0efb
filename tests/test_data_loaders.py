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


def test_jsonl_dataset_and_dev_only_label(tmp_path):
    good = _generic("Ann founded Zeta in Rome .", "Ann", "Zeta", "org:founded_by")
    _write_generic(tmp_path / "ok", {"train": [good], "dev": [good], "test": [good]})
    ds = load_dataset("jsonl", tmp_path / "ok")
    assert ds.relations == ["org:founded_by"] and len(ds.splits["test"]) == 1
    other = dict(good, relation="per:spouse")  # no relations.json: a dev-only label is kept
    _write_generic(tmp_path / "dev_only", {"train": [good], "dev": [good, other], "test": [good]})
    ds = load_dataset("jsonl", tmp_path / "dev_only")
    assert ds.relations == ["org:founded_by"] and ds.eval_only == {"per:spouse": 1}
    (tmp_path / "dev_only" / "relations.json").write_text(json.dumps(["org:founded_by"]))
    with pytest.raises(DataError) as e:  # declared label set: a label outside it is an error
        load_dataset("jsonl", tmp_path / "dev_only")
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


# ---------------------------------------------------------------- PTB tokens (issue 13, item 4)

PTB_ESCAPES = {"-LRB-", "-RRB-", "-LSB-", "-RSB-", "-LCB-", "-RCB-", "``", "''", "`"}


def _ptb_patches(tmp_path):
    rev = tmp_path / "tacrev_patch"
    rev.mkdir()
    (rev / "dev_patch.json").write_text(json.dumps([{"id": "ptb-dv-02", "relation": "no_relation"}]))
    (rev / "test_patch.json").write_text(json.dumps([{"id": "ptb-te-01", "relation": "per:origin"}]))
    re_ = tmp_path / "retacred_patch"
    re_.mkdir()
    for split in ("train", "dev", "test"):
        ids = [d["id"] for d in json.loads((FIX / "tacred_ptb" / f"{split}.json").read_text())]
        (re_ / f"{split}_id2label.json").write_text(json.dumps({i: "per:identity" for i in ids}))
    return rev, re_


def test_tacred_family_converts_ptb_tokens_to_text_keeping_spans(tmp_path):
    raw = {d["id"]: d for s in ("train", "dev", "test")
           for d in json.loads((FIX / "tacred_ptb" / f"{s}.json").read_text())}
    rev, re_ = _ptb_patches(tmp_path)
    for ds in (load_dataset("tacred", FIX / "tacred_ptb"), load_dataset("tacrev", FIX / "tacred_ptb", rev),
               load_dataset("retacred", FIX / "tacred_ptb", re_)):
        examples = {ex.id: ex for split in ds.splits.values() for ex in split}
        assert len(examples) == len(raw), ds.name
        for ex in examples.values():
            assert not {t.upper() for t in ex.tokens} & PTB_ESCAPES, (ds.name, ex.tokens)
            d = raw[ex.id]  # one token per token: spans unchanged (inclusive ends -> exclusive)
            assert len(ex.tokens) == len(d["token"])
            assert (ex.subj_start, ex.subj_end, ex.obj_start, ex.obj_end) == (
                d["subj_start"], d["subj_end"] + 1, d["obj_start"], d["obj_end"] + 1)
        assert examples["ptb-tr-01"].text == "The Acme Corporation ( ACME ) said on Monday that sales rose ."
        assert examples["ptb-tr-02"].text.startswith('" Peace is possible , " said John Smith')
        assert examples["ptb-tr-05"].subject == "Robert ( Bob ) Brown"  # inside an entity too
        assert "[ born 1950 ]" in examples["ptb-tr-03"].text and "{ Update }" in examples["ptb-tr-04"].text
        assert "` a failure '" not in examples["ptb-tr-06"].text and "' a failure '" in examples["ptb-tr-06"].text
        assert examples["ptb-dv-01"].text.startswith("Lena Ford ( 45 )")  # lower-case escapes as well
    # the conversion is part of the data hash: artifacts made from raw PTB tokens are not reused
    from tkre.data.dataset import hash_files
    files = [FIX / "tacred_ptb" / f"{s}.json" for s in ("train", "dev", "test")]
    assert load_dataset("tacred", FIX / "tacred_ptb").data_hash != hash_files(files)


def test_ptb_to_text_leaves_other_tokens_alone():
    from tkre.data.tacred import ptb_to_text
    assert [ptb_to_text(t) for t in ["-LRB-", "-rrb-", "``", "''", "`", "'s", "--", "LRB", "(", "-"]] == \
        ["(", ")", '"', '"', "'", "'s", "--", "LRB", "(", "-"]


# ---------------------------------------------------------------- type checks on every field (issue 14, item 4)

def _tacred_with(tmp_path, mutate):
    d = _copy_tacred(tmp_path)
    data = json.loads((d / "train.json").read_text())
    mutate(data[2])
    (d / "train.json").write_text(json.dumps(data))
    return d


@pytest.mark.parametrize("field, value, match", [
    ("token", "Maria Lopez was born in Valencia", "got a string"),
    ("token", ["Maria", 7, "was"], "item 1"),
    ("token", ["Maria", "", "was"], "item 1"),
    ("subj_type", 5, "expected a string"),
    ("obj_type", ["CITY"], "expected a string"),
    ("relation", 3, "expected a string"),
    ("subj_start", True, "expected an integer"),
    ("obj_end", 4.0, "expected an integer"),
    ("id", ["x"], "expected a string"),
])
def test_tacred_field_types(tmp_path, field, value, match):
    d = _tacred_with(tmp_path, lambda r: r.update({field: value}))
    with pytest.raises(DataError, match=match) as e:
        load_dataset("tacred", d)
    assert e.value.file.endswith("train.json") and e.value.field == field
    assert e.value.record in ("fx-tr-03", "#2")


def test_tacred_null_types_are_untyped(tmp_path):
    d = _tacred_with(tmp_path, lambda r: r.update(subj_type=None))
    ex = load_dataset("tacred", d).splits["train"][2]
    assert ex.subj_type is None and ex.obj_type
    to_arrow([ex])  # and the Arrow schema takes it


@pytest.mark.parametrize("mutate, field, match", [
    (lambda d: d.update(token="Maria Lopez was born"), "token", "got a string"),
    (lambda d: d.update(relation=7), "relation", "expected a string"),
    (lambda d: d.update(h={"name": "x", "pos": [0, True]}), "h.pos", "two integers"),
    (lambda d: d.update(t="pistons"), "t", "JSON object"),
])
def test_semeval_field_types(tmp_path, mutate, field, match):
    src = Path(__file__).parents[1] / "tkre" / "data" / "files" / "semeval"
    d = tmp_path / "semeval"
    d.mkdir()
    for name in ("rel2id.json", "val.txt", "test.txt"):
        shutil.copy(src / name, d / name)
    rows = [json.loads(line) for line in (src / "train.txt").read_text().splitlines()[:3]]
    mutate(rows[1])
    (d / "train.txt").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=match) as e:
        load_dataset("semeval", d)
    assert e.value.file.endswith("train.txt") and e.value.record == "line 2" and e.value.field == field


@pytest.mark.parametrize("mutate, field, match", [
    (lambda d: d.update(tokens="Ann founded Zeta in Rome ."), "tokens", "got a string"),
    (lambda d: d.update(relation=["org:founded_by"]), "relation", "expected a string"),
    (lambda d: d.update(subj_type=3), "subj_type", "expected a string"),
    (lambda d: d.update(obj_start=True), "obj_start", "expected an integer"),
    (lambda d: d.update(subj=None), "subj", "missing field"),
    (lambda d: d.update(source=1), "source", "expected a string"),
    (lambda d: d.update(text=["Ann"]), "text", "expected a string"),
])
def test_generic_jsonl_field_types(tmp_path, mutate, field, match):
    row = _generic("Ann founded Zeta in Rome .", "Ann", "Zeta", "org:founded_by")
    mutate(row)
    with pytest.raises(DataError, match=match) as e:
        example_from_generic(row, file="k8.jsonl", record="line 1")
    assert e.value.field == field and e.value.record == "line 1" and e.value.file == "k8.jsonl"


def test_bad_relations_json_and_rel2id(tmp_path):
    good = _generic("Ann founded Zeta in Rome .", "Ann", "Zeta", "org:founded_by")
    _write_generic(tmp_path / "j", {"train": [good], "dev": [good], "test": [good]})
    (tmp_path / "j" / "relations.json").write_text(json.dumps(["org:founded_by", 4]))
    with pytest.raises(DataError, match="expected a string") as e:
        load_dataset("jsonl", tmp_path / "j")
    assert e.value.file.endswith("relations.json") and e.value.record == "#1"
    src = Path(__file__).parents[1] / "tkre" / "data" / "files" / "semeval"
    shutil.copytree(src, tmp_path / "s")
    (tmp_path / "s" / "rel2id.json").write_text(json.dumps({"Other": 0, "Cause-Effect(e1,e2)": "1"}))
    with pytest.raises(DataError, match="integer label id") as e:
        load_dataset("semeval", tmp_path / "s")
    assert e.value.record == "Cause-Effect(e1,e2)"


# ---------------------------------------------------------------- non-UTF-8 bytes (issue 14, item 4)

def test_non_utf8_byte_in_a_dataset_file_names_file_and_line(tmp_path):
    d = _copy_tacred(tmp_path)
    lines = (d / "dev.json").read_bytes().split(b"\n")
    assert lines[4] == b'   "Sam",'
    lines[4] = b'   "S\xe9m",'  # a Latin-1 e-acute
    (d / "dev.json").write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match="not UTF-8") as e:
        load_dataset("tacred", d)
    assert e.value.file.endswith("dev.json") and e.value.record == "line 5" and "0xe9 at column 6" in str(e.value)

    good = _generic("Ann founded Zeta in Rome .", "Ann", "Zeta", "org:founded_by")
    _write_generic(tmp_path / "j", {"train": [good, good], "dev": [good], "test": [good]})
    path = tmp_path / "j" / "train.jsonl"
    path.write_bytes(path.read_bytes().replace(b"Rome", b"R\xf6me", 2).replace(b"R\xf6me", b"Rome", 1))
    with pytest.raises(DataError, match="not UTF-8") as e:
        load_dataset("jsonl", tmp_path / "j")
    assert e.value.file.endswith("train.jsonl") and e.value.record == "line 2"


def test_utf8_bom_is_accepted(tmp_path):
    d = _copy_tacred(tmp_path)
    (d / "test.json").write_bytes(b"\xef\xbb\xbf" + (d / "test.json").read_bytes())
    assert load_dataset("tacred", d).splits["test"]


def test_non_utf8_byte_in_a_config_file_names_file_and_line(tmp_path):
    from tkre.config import FinetuneConfig, load_config, read_yaml
    from tkre.errors import ConfigError
    cfg = tmp_path / "exp.yaml"
    cfg.write_bytes(b"finetune:\n  lr: 0.0001\n  # caf\xe9 notes\n")
    for call in (lambda: read_yaml(cfg), lambda: load_config(cfg, FinetuneConfig, section="finetune")):
        with pytest.raises(ConfigError) as e:
            call()
        assert f"{cfg}:3:" in str(e.value) and "not UTF-8" in str(e.value)
