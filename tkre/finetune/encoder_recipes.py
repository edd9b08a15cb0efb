"""Fine-tuning optimisation that fits the encoder.

The `FinetuneConfig` defaults (lr 3e-5, batch 32, 10 epochs) are the paper's, tuned for RoBERTa-large.
On the small embedded MiniLM they barely move the model in 8-shot (about 50 optimizer steps; 8.8 %
test micro-F1 on SemEval 8-shot seed 1). So each embedded encoder has a small documented recipe
that replaces those three values -- but only when the user set none of them (pydantic's
`model_fields_set` says which fields were given): an explicit value, even one equal to the paper's,
always wins, and setting any one of the three switches the whole recipe off.
"""

from __future__ import annotations

from dataclasses import dataclass

from tkre.config import EMBEDDED_ENCODER, FinetuneConfig

#: The fields a recipe sets (all together, or none).
RECIPE_FIELDS = ("lr", "epochs", "batch_size")


@dataclass(frozen=True)
class EncoderRecipe:
    lr: float
    epochs: int
    batch_size: int
    source: str  # where the numbers come from (printed with the recipe)

    def values(self) -> dict:
        return {"lr": self.lr, "epochs": self.epochs, "batch_size": self.batch_size}


RECIPES: dict[str, EncoderRecipe] = {
    EMBEDDED_ENCODER: EncoderRecipe(
        lr=1e-4, epochs=12, batch_size=16,
        source="measured on SemEval 8-shot with the quickstart (lr 1e-4, batch 16): the paper's lr 3e-5 x 10 "
               "epochs leaves MiniLM near chance"),
}


def recipe_for(cfg: FinetuneConfig) -> EncoderRecipe | None:
    """The recipe that applies to `cfg`: its encoder has one and none of RECIPE_FIELDS was set."""
    recipe = RECIPES.get(cfg.encoder)
    if recipe is None or cfg.model_fields_set.intersection(RECIPE_FIELDS):
        return None
    return recipe


def apply_encoder_recipe(cfg: FinetuneConfig) -> tuple[FinetuneConfig, str | None]:
    """(cfg with the encoder's recipe applied, one line saying so) or (cfg unchanged, None).

    The returned config marks the recipe's fields as set, so applying it twice changes nothing."""
    recipe = recipe_for(cfg)
    if recipe is None:
        return cfg, None
    note = (f"{cfg.encoder}: its fine-tuning recipe applies (lr {recipe.lr:g}, {recipe.epochs} epochs, batch "
            f"{recipe.batch_size}; the paper's values suit RoBERTa-large) -- set lr, epochs or batch_size to override")
    return cfg.model_copy(update=recipe.values()), note
