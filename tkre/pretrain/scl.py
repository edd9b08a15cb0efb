"""Span-level contrastive learning (SCL): loss, span pooling, negative spans, relation anchors.

    L_scl = -log( exp(cos(a,p)/tau) / (exp(cos(a,p)/tau) + exp(cos(a,n)/tau)) )

a = learned embedding of the example's relation type (the anchor table), p = pooled encoder states
of the relation span, n = pooled states of a span unrelated to the relation. An example without
such a span (no token outside the entities and the relation span) has no SCL term.
"""

from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F

from tkre.errors import TkreError
from tkre.pretrain.masking import OTHER

ANCHORS_WEIGHTS = "tkre_scl_anchors.pt"
ANCHORS_RELATIONS = "tkre_scl_relations.json"


def scl_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean over the batch of the method's SCL loss. Shapes (B, H). Computed as
    -(s_p - logsumexp(s_p, s_n)) with s = cos/tau, which equals the formula and cannot overflow."""
    s_pos = F.cosine_similarity(anchor, positive, dim=-1) / tau
    s_neg = F.cosine_similarity(anchor, negative, dim=-1) / tau
    return (torch.logsumexp(torch.stack([s_pos, s_neg]), dim=0) - s_pos).mean()


def span_mean_pool(hidden: torch.Tensor, span_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the states where span_mask is true: (B, T, H), (B, T) -> (B, H). Empty spans -> zeros."""
    m = span_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def sample_negative_span(roles: torch.Tensor, min_len: int, max_len: int, generator: torch.Generator,
                         strategy: str = "random_non_entity") -> tuple[torch.Tensor, bool]:
    """A contiguous span of min_len..max_len tokens unrelated to the relation.

    random_non_entity: tokens that are neither entity, relation span nor special (role OTHER); the
    span stays inside one run of such tokens. An example without any OTHER token has no negative:
    the mask is empty and the second value False -- the SCL term of that example is then skipped
    (never a negative taken from the relation span, which is the positive). Returns (bool mask (T,), ok)."""
    if strategy != "random_non_entity":
        raise TkreError(f"unknown negative span strategy '{strategy}' (known: random_non_entity)")
    mask = torch.zeros(roles.shape, dtype=torch.bool)
    runs, start = [], None
    for i, r in enumerate(roles.tolist() + [-1]):
        if r == OTHER and start is None:
            start = i
        elif r != OTHER and start is not None:
            runs.append((start, i))
            start = None
    if not runs:
        return mask, False
    length = int(torch.randint(min_len, max_len + 1, (1,), generator=generator))
    # choose uniformly among all valid start positions of all runs (shorter runs cap the length)
    starts = [(a, min(length, b - a)) for a, b in runs for a in range(a, b - min(length, b - a) + 1)]
    a, n = starts[int(torch.randint(len(starts), (1,), generator=generator))]
    mask[a:a + n] = True
    return mask, True


def masked_scl_loss(anchor: torch.Tensor, positive_mask: torch.Tensor, negative_mask: torch.Tensor,
                    hidden: torch.Tensor, tau: float) -> tuple[torch.Tensor, int]:
    """(SCL loss over the examples that have both a positive and a negative span, their number).

    Examples with an empty span are left out of the mean; with none left the loss is an exact 0
    that still depends on the anchors, so every parameter gets a gradient (DDP needs that)."""
    valid = positive_mask.any(dim=1) & negative_mask.any(dim=1)
    n = int(valid.sum())
    if n == 0:
        return anchor.sum() * 0.0, 0
    h = hidden[valid]
    return scl_loss(anchor[valid], span_mean_pool(h, positive_mask[valid]), span_mean_pool(h, negative_mask[valid]),
                    tau), n


class AnchorTable(torch.nn.Module):
    """One learned anchor vector per relation type."""

    def __init__(self, relations: list[str], hidden_size: int):
        super().__init__()
        if not relations:
            raise TkreError("the SCL anchor table needs at least one relation")
        if len(set(relations)) != len(relations):
            raise TkreError("duplicate relation names in the SCL anchor table")
        self.relations = list(relations)
        self._index = {r: i for i, r in enumerate(self.relations)}
        self.embedding = torch.nn.Embedding(len(relations), hidden_size)
        torch.nn.init.normal_(self.embedding.weight, std=0.02)

    def index(self, relation: str, *, record: str | None = None) -> int:
        if relation not in self._index:
            where = f" (example {record})" if record is not None else ""
            raise TkreError(f"relation '{relation}'{where} is missing from the SCL anchor table; "
                            f"known relations: {', '.join(self.relations)}")
        return self._index[relation]

    def forward(self, relation_ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(relation_ids)

    def save(self, directory: str) -> None:
        torch.save(self.embedding.weight.detach().cpu(), os.path.join(directory, ANCHORS_WEIGHTS))
        with open(os.path.join(directory, ANCHORS_RELATIONS), "w", encoding="utf-8") as f:
            json.dump(self.relations, f, indent=1)

    @classmethod
    def load(cls, directory: str, hidden_size: int) -> "AnchorTable | None":
        """The table saved beside a checkpoint, or None if there is none."""
        rel_path = os.path.join(directory, ANCHORS_RELATIONS)
        if not os.path.isfile(rel_path):
            return None
        with open(rel_path, encoding="utf-8") as f:
            relations = json.load(f)
        weight = torch.load(os.path.join(directory, ANCHORS_WEIGHTS), map_location="cpu")
        if weight.shape != (len(relations), hidden_size):
            raise TkreError(f"{directory}: SCL anchors have shape {tuple(weight.shape)}, expected "
                            f"({len(relations)}, {hidden_size}) -- the checkpoint is from another model")
        table = cls(relations, hidden_size)
        table.embedding.weight.data.copy_(weight)
        return table
