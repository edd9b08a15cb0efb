"""What every configuration section shares: the enumerations (also the command line's choices), the
protocols' published seeds, the embedded models' names and the strict base model (unknown keys are errors)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

DatasetName = Literal["semeval", "tacred", "tacrev", "retacred", "jsonl"]
Protocol = Literal["knowprompt", "genpt"]
Backend = Literal["hf", "vllm", "openai"]
Backbone = Literal["typ_marker", "genpt"]
PROTOCOL_SEEDS = {"knowprompt": (1, 2, 3, 4, 5), "genpt": (13, 21, 42, 87, 100)}  # the protocols' published splits
SEEDS_HELP = "; ".join(f"{name}: {', '.join(map(str, seeds))}" for name, seeds in PROTOCOL_SEEDS.items())

#: Model names that resolve to a model shipped inside a registry package (see tkre/model_sources.py).
EMBEDDED_ENCODER = "embedded:minilm"
EMBEDDED_GENERATOR = "embedded:smollm2"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())
