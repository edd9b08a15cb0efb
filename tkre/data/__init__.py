"""Relation-extraction data: one record type, loaders, K-shot sampling, type schemas."""

from tkre.data.kshot import KShotSplit, relation_type_schema, sample_kshot
from tkre.data.loaders import LOADERS, Dataset, load_dataset, load_from_config, load_jsonl_split
from tkre.data.records import (
    ARROW_SCHEMA,
    RelationExample,
    example_from_generic,
    example_to_generic,
    from_arrow,
    is_no_relation,
    to_arrow,
)

__all__ = [
    "ARROW_SCHEMA", "Dataset", "KShotSplit", "LOADERS", "RelationExample", "example_from_generic",
    "example_to_generic", "from_arrow", "is_no_relation", "load_dataset", "load_from_config",
    "load_jsonl_split", "relation_type_schema", "sample_kshot", "to_arrow",
]
