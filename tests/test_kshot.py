"""K-shot sampling: both protocols, determinism, sizes, bad K."""

from collections import Counter

import numpy as np
import pytest

from tkre.data import relation_type_schema, sample_kshot
from tkre.data.kshot import knowprompt_order
from tkre.data.splits import jsonl_text, write_kshot
from tkre.errors import DataError


def test_knowprompt_cumulative_shuffle_matches_reference_procedure(semeval):
    # the reference: one list, np.random.seed(s); np.random.shuffle(list) for s = 1, 2, 3 in turn
    items = list(range(len(semeval.splits["train"])))
    for s in (1, 2, 3):
        np.random.seed(s)
        np.random.shuffle(items)
    expected = [semeval.splits["train"][i] for i in items]
    assert knowprompt_order(semeval.splits["train"], 3) == expected
    assert knowprompt_order(semeval.splits["train"], 3) != knowprompt_order(semeval.splits["train"], 1)


@pytest.mark.parametrize("k, size", [(8, 144), (16, 288), (32, 576)])
def test_semeval_sizes_18_labels(semeval, k, size):
    for protocol, seed in (("knowprompt", 1), ("genpt", 13)):
        split = sample_kshot(semeval, k, seed, protocol)
        assert len(split.train) == size
        counts = Counter(e.relation for e in split.train)
        assert len(counts) == 18 and set(counts.values()) == {k}
        assert split.missing_relations == ["Entity-Destination(e2,e1)"]


def test_knowprompt_groups_labels_in_first_appearance_order(semeval):
    split = sample_kshot(semeval, 8, 2, "knowprompt")
    order = knowprompt_order(semeval.splits["train"], 2)
    first_seen = list(dict.fromkeys(e.relation for e in order))
    assert list(dict.fromkeys(e.relation for e in split.train)) == first_seen
    assert split.train[:8] == [e for e in order if e.relation == first_seen[0]][:8]
    assert len(split.dev) == 1493 and len(split.test) == 2717


def test_genpt_dev_disjoint_from_train(semeval):
    split = sample_kshot(semeval, 8, 13, "genpt")
    assert len(split.dev) == 144
    assert not {e.id for e in split.dev} & {e.id for e in split.train}
    other = sample_kshot(semeval, 8, 21, "genpt")
    assert [e.id for e in other.train] != [e.id for e in split.train]


def test_byte_identical_files(semeval, tmp_path):
    a, _ = write_kshot(semeval, k=8, seed=1, protocol="knowprompt", out=tmp_path / "a.jsonl")
    write_kshot(semeval, k=8, seed=1, protocol="knowprompt", out=tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl").read_text().count("\n") == 144
    assert jsonl_text(a.train) == (tmp_path / "a.jsonl").read_text()
    assert (tmp_path / "a.jsonl.schema.json").is_file()


@pytest.mark.parametrize("k", [0, -3])
def test_bad_k(semeval, k):
    with pytest.raises(DataError, match="K must be a positive"):
        sample_kshot(semeval, k, 1)


def test_unknown_protocol_and_seed(semeval):
    with pytest.raises(DataError, match="protocol"):
        sample_kshot(semeval, 8, 1, "fewrel")
    with pytest.raises(DataError, match="seed"):
        sample_kshot(semeval, 8, 0, "knowprompt")


def test_type_schema_from_tacred_fixture():
    from pathlib import Path

    from tkre.data import load_dataset
    ds = load_dataset("tacred", Path(__file__).parent / "fixtures" / "tacred")
    schema = relation_type_schema(ds.splits["train"])
    assert schema["per:employee_of"] == [["PERSON", "ORGANIZATION"]]
    assert schema["org:city_of_headquarters"] == [["ORGANIZATION", "CITY"]]


def test_kshot_file_of_tacred_has_plain_text_for_ptb_tokens(tmp_path):
    import json
    from pathlib import Path

    from tkre.data import load_dataset
    from tkre.data.splits import write_kshot
    ds = load_dataset("tacred", Path(__file__).parent / "fixtures" / "tacred_ptb")
    split, _ = write_kshot(ds, k=1, seed=1, protocol="knowprompt", out=tmp_path / "k1.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "k1.jsonl").read_text().splitlines()]
    assert len(rows) == len(split.train) == 6
    by_id = {r["id"]: r for r in rows}
    alt = by_id["ptb-tr-01"]
    assert alt["text"] == "The Acme Corporation ( ACME ) said on Monday that sales rose ."
    assert alt["text"][alt["obj_start"]:alt["obj_end"]] == alt["obj"] == "ACME"
    assert by_id["ptb-tr-05"]["subj"] == "Robert ( Bob ) Brown"
    assert not any(t in r["text"] for r in rows for t in ("-LRB-", "-RRB-", "``", "''", "-LSB-", "-LCB-"))
