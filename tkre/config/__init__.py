"""Typed configuration: one pydantic model per stage, loadable from YAML.

Defaults are the paper's (see shared/method.md) unless a field says otherwise. Every field has a
one-line description: `tkre ... --help` and the README reuse them. Unknown keys are errors.

`load_config(path, Model)` reads YAML and reports a bad value as `file:line: field: message`
(tkre/config/files.py, re-exported here; the names every section shares are in tkre/config/base.py).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from pydantic import Field, model_validator

from tkre.config.base import (EMBEDDED_ENCODER, EMBEDDED_GENERATOR, PROTOCOL_SEEDS, SEEDS_HELP,  # noqa: F401
                              Backbone, Backend, DatasetName, Protocol, StrictModel)
from tkre.config.files import (field_model, load_config, read_yaml, unknown_key_hint,  # noqa: F401 -- re-exported
                               validate_config, validation_error_message)
from tkre.config.resources import ResourcesConfig


class DataConfig(StrictModel):
    """Which dataset, which K-shot split."""

    dataset: DatasetName = Field("semeval", description="semeval (shipped), tacred, tacrev, retacred or jsonl")
    path: str | None = Field(None, description="directory with the dataset files (all but semeval)")
    patch_path: str | None = Field(
        None, description="retacred: directory with {train,dev,test}_id2label.json; tacrev: override the shipped patch")
    k: int = Field(8, gt=0, description="examples per relation in the K-shot training split")
    seed: int = Field(1, description=f"K-shot sampling seed ({SEEDS_HELP})")
    protocol: Protocol = Field("knowprompt", description="K-shot sampling protocol: knowprompt or genpt")

    @model_validator(mode="after")
    def _path_needed(self) -> "DataConfig":
        if self.dataset != "semeval" and not self.path:
            raise ValueError(f"dataset '{self.dataset}' needs 'path' (its files are not shipped)")
        return self


class SamplingConfig(StrictModel):
    """How a generator samples (shared by the stages it serves; each stage sets its own token budget)."""

    temperature: float = Field(0.1, ge=0.0, description="0 = greedy (reference code UESTC-GQJ/TKRE: 0.1)")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="nucleus sampling (reference code: 0.95)")
    seed: int = Field(0, description="base sampling seed (each row's seed is derived from it and the row's cache key)")
    n: int = Field(1, ge=1, description="completions per prompt")

    def decoding(self, max_new_tokens: int) -> "DecodingConfig":
        """The per-call parameters a backend gets: these settings plus one stage's token budget."""
        return DecodingConfig(**self.model_dump(), max_new_tokens=max_new_tokens)


class DecodingConfig(SamplingConfig):
    """What one generation call uses: a generator's sampling settings and the stage's new-token budget."""

    max_new_tokens: int = Field(..., gt=0, description="new tokens per completion (set by the stage)")

    def key(self) -> dict:
        """The parameters that change a completion (part of every generation cache key)."""
        return {"temperature": self.temperature, "top_p": self.top_p, "max_new_tokens": self.max_new_tokens,
                "seed": self.seed}


class VLLMConfig(StrictModel):
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine replica")
    num_replicas: int = Field(1, ge=1, description="engine replicas (= GPUs / tensor_parallel_size)")
    batch_size: int = Field(64, ge=1, description="rows per batch sent to an engine")
    max_model_len: int = Field(4096, ge=16)
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    accelerator_type: str | None = Field(
        None, description="GPU type every engine replica needs (Ray's accelerator names: A10G, L4, A100, H100, ...): "
                          "placement on that node type, and `tkre sweep --plan` checks that the weights fit its memory; "
                          "None: any GPU")


class OpenAIConfig(StrictModel):
    base_url: str = Field("https://api.openai.com/v1", description="OpenAI-compatible server root")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0, description="retries on HTTP 408/409/429/5xx, time-outs and connection errors "
                             "(the openai client's exponential back-off, honouring Retry-After)")
    concurrency: int = Field(4, ge=1, description="requests in flight")


class GeneratorConfig(StrictModel):
    """One LLM generator: which model, where it runs, how it samples (EDKG's, and SCDG's unless set)."""

    backend: Backend = Field("hf", description="generation backend")
    model: str = Field(EMBEDDED_GENERATOR, description="HF id, local path, server model name or embedded:smollm2 "
                                                       "(paper: meta-llama/Llama-2-13b-chat-hf)")
    revision: str | None = Field(None, description="model revision (Hub models; part of the cache key)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="hf backend: where the model runs")
    batch_size: int = Field(16, ge=1, description="prompts per batch")
    concurrency: int = Field(1, ge=1, description="actors in the generation pool")
    threads_per_actor: int | None = Field(None, ge=1, description="hf backend: torch CPU threads per actor, and the Ray "
                                          "CPUs it reserves unless cpus_per_actor says (default: free CPUs / actors)")
    cpus_per_actor: float | None = Field(None, gt=0, description="hf backend, with threads_per_actor: the Ray CPUs "
                                         "each actor reserves instead (e.g. 1.9 for 2 threads: sweep trials' drivers "
                                         "hold the rest)")
    cache_dir: str | None = Field(None, description="generation cache (default: ~/.cache/tkre/generation)")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    system_prompt: str | None = Field(None, description="optional system message sent before every prompt")
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig)
    max_error_fraction: float = Field(
        0.1, ge=0.0, le=1.0, description="share of a stage's rows whose generation may fail (HTTP errors, "
        "time-outs) before the stage fails; a stage where every row failed always fails (tkre's choice: failed "
        "rows are not cached, so a rerun retries only them)")
    price_per_m_input_tokens: float | None = Field(
        None, ge=0.0, description="USD per million input tokens, for cost reports (None = unknown; 0 for local models)")
    price_per_m_output_tokens: float | None = Field(
        None, ge=0.0, description="USD per million output tokens, for cost reports (None = unknown; 0 for local models)")

    @property
    def name(self) -> str:
        """`backend:model`, the generator's name in results rows."""
        return f"{self.backend}:{self.model}"

    def fixed_actor_cpus(self) -> float | None:
        """The Ray CPUs each hf actor reserves when its threads are fixed (`threads_per_actor`): the pool
        (tkre/generate/backends/hf.py) and the sweep's fit check (tkre/cluster/resources.py) both read it."""
        return float(self.cpus_per_actor or self.threads_per_actor) if self.threads_per_actor else None


class EDKGConfig(StrictModel):
    """Explanation-driven knowledge generation: one explanation per golden example (method section 1)."""

    generator: GeneratorConfig = Field(default_factory=GeneratorConfig, description="the explanation generator")
    max_new_tokens: int = Field(1024, gt=0, description="new tokens per explanation (reference code: 1024; the "
                                                        "paper's explanations run 150-250 words)")
    prompt: str | None = Field(None, description="override the EDKG template (see tkre/generate/prompts.py)")


class SCDGConfig(StrictModel):
    """Schema-constrained data generation: synthetic samples per relation, in rounds (method section 2)."""

    generator: GeneratorConfig | None = Field(
        None, description="the sample generator (None = EDKG's whole generator section; an experiment fills it in)")
    samples_per_relation: int | None = Field(
        None, gt=0, description="synthetic samples asked per relation (None = K: the paper doubles the K-shot set; "
                                "an experiment fills it in)")
    source: Literal["llm", "oracle", "shuffled", "golden_repeat"] = Field(
        "llm", description="what fills the synthetic set: llm = the generator's kept samples (the method); controls "
        "(tkre/generate/controls.py): oracle = samples_per_relation real training examples per relation from "
        "outside the split (the best a generator could give); shuffled = the generator's samples with labels "
        "permuted; golden_repeat = golden examples repeated to the generator's kept count per relation")
    samples_per_prompt: int = Field(8, ge=1, description="new samples asked for in one prompt (reference code: "
                                                         "\"Generate eight more samples\")")
    prompt_examples: int = Field(8, ge=1, description="golden samples shown in one prompt (reference code: up to 8)")
    max_rounds: int = Field(10, ge=1, description="rounds while relations lack samples; each round tops up only "
                                                  "the relations short of their target (reference code: 10 attempts)")
    tokens_per_sample: int = Field(128, gt=0, description="new-token allowance per sample asked (reference code: "
                                                          "1024 new tokens for 8 samples)")
    max_new_tokens: int | None = Field(
        None, gt=0, description="new tokens per completion (None = tokens_per_sample x samples_per_prompt)")
    prompt: str | None = Field(None, description="override the SCDG template (see tkre/generate/prompts.py)")
    example_prompt: str | None = Field(None, description="override the SCDG per-sample schema block")
    constrained: bool = Field(True, description="enforce the sample schema while decoding (tkre/generate/schema.py): "
                              "the decode-time form of the paper's schema constraint; false = the paper's free "
                              "text + regex parser")

    @property
    def new_tokens(self) -> int:
        """The new-token budget of one completion, sized for the samples one prompt asks for."""
        return self.max_new_tokens or self.tokens_per_sample * self.samples_per_prompt


class StageConfig(StrictModel):
    enabled: bool = Field(True, description="switch the stage off for ablations")
    epochs: int = Field(3, ge=1)
    lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(16, ge=1, description="per-step batch size over all workers")


class SCLConfig(StrictModel):
    """Stage 2's loss, lambda1 * MSLM + lambda2 * SCL, and SCL's negative spans: one object that the
    pre-training task and the model take whole (method.md; reference code defaults)."""

    tau: float = Field(0.1, gt=0.0, description="SCL temperature (reference code: 0.1)")
    lambda1: float = Field(1.0, ge=0.0, description="weight of the MSLM loss in stage 2 (reference code: 1.0)")
    lambda2: float = Field(1.0, ge=0.0, description="weight of the SCL loss in stage 2; 0 = the w/o SCL ablation "
                                                    "(reference code: 1.0)")
    negative_span: Literal["random_non_entity"] = Field(
        "random_non_entity", description="SCL negative: a random span of non-entity, non-relation tokens (paper)")
    negative_span_min: int = Field(1, ge=1, description="shortest negative span, in tokens (paper: 1-3)")
    negative_span_max: int = Field(3, ge=1, description="longest negative span, in tokens (paper: 1-3)")

    @model_validator(mode="after")
    def _span_bounds(self) -> "SCLConfig":
        if self.negative_span_min > self.negative_span_max:
            raise ValueError("negative_span_min must be <= negative_span_max")
        return self


class PretrainConfig(StrictModel):
    """Two-stage knowledge-guided pre-training."""

    encoder: str = Field(EMBEDDED_ENCODER, description="masked-LM encoder: HF id, local path or embedded:minilm")
    max_length: int = Field(128, ge=8)
    stage1: StageConfig = Field(default_factory=StageConfig, description="MSLM on the explanation corpus")
    stage2: StageConfig = Field(default_factory=StageConfig, description="MSLM + SCL on golden + synthetic")
    masking: Literal["mslm", "bert"] = Field("mslm", description="mslm = role-based; bert = 15% 80/10/10 ablation")
    p_relation: float = Field(0.8, ge=0.0, le=1.0, description="masking probability, relation-span tokens")
    p_entity: float = Field(0.5, ge=0.0, le=1.0, description="masking probability, subject/object tokens")
    p_other: float = Field(0.2, ge=0.0, le=1.0, description="masking probability, other tokens")
    bert_mask_prob: float = Field(0.15, ge=0.0, le=1.0, description="BERT-style masking rate (ablation)")
    scl: SCLConfig = Field(default_factory=SCLConfig, description="stage 2: loss weights, SCL temperature, negatives")
    warmup_ratio: float = Field(0.1, ge=0.0, le=1.0)
    weight_decay: float = Field(0.01, ge=0.0)
    grad_accum: int = Field(1, ge=1)
    seed: int = 42
    heldout_fraction: float = Field(0.1, gt=0.0, le=1.0, description=(
        "share of each stage's corpus copied into an evaluation sample whose MSLM loss is tracked per epoch; "
        "a copy: the stage still trains on every text, golden ones included (at least one text). tkre's "
        "own; the paper tracks no pre-training loss"))
    max_heldout: int = Field(128, ge=1, description="cap on the texts of that evaluation sample per stage")
    mixed_precision: bool | None = Field(None, description="bf16/fp16 autocast; default: on with GPUs, off on CPU")
    mlm_head_init: Literal["random", "embeddings"] = Field("random", description=(
        "MLM-head weights missing from the encoder's checkpoint (MiniLM ships without a head): random = "
        "transformers' init (the paper's method as is); embeddings = transform as identity, decoder tied to the "
        "input embeddings, output bias 0 (tkre option, tkre/pretrain/head.py)"))
    mlm_head_warmup_epochs: int = Field(0, ge=0, description=(
        "epochs of head-only MSLM (encoder frozen) on the stage-1 corpus before stage 1, with stage 1's lr and "
        "batch size; 0 = off, the paper's method (tkre option for encoders without a trained head)"))
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)


class BudgetConfig(StrictModel):
    """How long fine-tuning trains: what makes two variants' fine-tuning comparable. Fixed epochs give a
    variant with more (synthetic) data more optimizer steps; fixed steps give every variant the same
    number whatever its data size; convergence stops each on its own dev micro-F1."""

    mode: Literal["epochs", "steps", "convergence"] = Field(
        "epochs", description="epochs: finetune.epochs epochs (the paper's 10); steps: `steps` optimizer steps for "
                              "every variant; convergence: stop after `patience` epochs without a better dev "
                              "micro-F1, at most `max_epochs`")
    steps: int | None = Field(None, ge=1, description="mode steps: optimizer steps (the last epoch may be partial; "
                                                      "the learning-rate schedule spans them)")
    patience: int = Field(3, ge=1, description="mode convergence: epochs without a better dev micro-F1 before stopping")
    max_epochs: int = Field(30, ge=1, description="mode convergence: the most epochs (the learning-rate schedule "
                                                  "spans them)")

    @model_validator(mode="after")
    def _steps_for_steps(self) -> "BudgetConfig":
        if self.mode == "steps" and self.steps is None:
            raise ValueError("budget mode 'steps' needs budget.steps (optimizer steps)")
        if self.mode != "steps" and self.steps is not None:
            raise ValueError(f"budget.steps is set but budget.mode is {self.mode!r}: set mode: steps")
        return self

    def describe(self, epochs: int) -> str:
        """One phrase for results rows and reports, e.g. `120 steps` (`epochs`: finetune.epochs)."""
        if self.mode == "steps":
            return f"{self.steps} steps"
        if self.mode == "convergence":
            return f"convergence (patience {self.patience}, max {self.max_epochs} epochs)"
        return f"{epochs} epoch{'s' if epochs != 1 else ''}"


class EncoderRecipe(NamedTuple):
    lr: float
    epochs: int
    batch_size: int


#: Fine-tuning that fits an embedded encoder. The paper's lr 3e-5, batch 32, 10 epochs suit RoBERTa-large;
#: on MiniLM they barely move the model in 8-shot (8.8 % test micro-F1 on SemEval 8-shot seed 1; the recipe
#: was measured with the quickstart). It replaces those three values when the input (YAML, overrides,
#: options) sets none of them: any one of them set, even to the paper's value, switches it off.
ENCODER_RECIPES: dict[str, EncoderRecipe] = {EMBEDDED_ENCODER: EncoderRecipe(lr=1e-4, epochs=12, batch_size=16)}
RECIPE_FIELDS = EncoderRecipe._fields


class FinetuneConfig(StrictModel):
    """Task-oriented fine-tuning (paper: AdamW, lr 3e-5, batch 32, 10 epochs; an embedded encoder's
    recipe, ENCODER_RECIPES, when the input sets none of lr/epochs/batch_size)."""

    backbone: Backbone = Field("typ_marker", description="classifier")
    encoder: str = Field(EMBEDDED_ENCODER, description="initial weights: HF id, local path, tkre checkpoint")
    allow_different_encoder: bool = Field(
        False, description="in an experiment, allow finetune.encoder to differ from pretrain.encoder on purpose "
                           "(otherwise a configuration error: golden-only and TKRE would compare different encoders)")
    lr: float = Field(3e-5, gt=0, description="AdamW learning rate (paper: 3e-5; an embedded encoder's recipe "
                                              "replaces lr/epochs/batch_size when none is set, see "
                                              "ENCODER_RECIPES in tkre/config/__init__.py)")
    batch_size: int = Field(32, ge=1, description="per-step batch over all workers (paper: 32)")
    epochs: int = Field(10, ge=1, description="training epochs (paper: 10) when budget.mode is epochs")
    budget: BudgetConfig = Field(default_factory=BudgetConfig, description=(
        "fixed epochs, fixed optimizer steps or to convergence on dev micro-F1 (setting it keeps an embedded "
        "encoder's recipe: only lr, epochs, batch_size switch it off)"))
    max_length: int = Field(256, ge=16)
    warmup_ratio: float = Field(0.1, ge=0.0, le=1.0, description=(
        "share of the optimizer steps with a linear learning-rate warm-up (TYP Marker's and the reference "
        "code's 0.1; the paper does not say)"))
    weight_decay: float = Field(0.01, ge=0.0)
    synthetic_cap_per_relation: int | None = Field(
        None, ge=0, description="cap on synthetic examples per relation used in fine-tuning (None = all; 0 = golden "
                                "only); how many are asked is scdg.samples_per_relation")
    seed: int = 42
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    use_types: bool | None = Field(
        None, description="write entity types into the input (None = when every training example has both)")
    genpt_label_words: dict[str, str] = Field(
        default_factory=dict, description="GenPT: relation -> label words, overriding the derived verbalisation")
    eval_every_steps: int | None = Field(None, ge=1, description=(
        "evaluate dev (the selection points) every this many optimizer steps and after the last; None: after "
        "every epoch (the paper). In steps, two variants of different data sizes are selected at the same points"))
    eval_batch_size: int = Field(64, ge=1, description="examples per inference batch")
    eval_ray_data_min_examples: int = Field(
        10_000, ge=0, description="evaluation sets at least this large are predicted with Ray Data actors")
    eval_actors: int = Field(2, ge=1, description="Ray Data inference actors (one CPU each) on CPU; with "
                             "resources.use_gpu the test set always goes to num_workers actors of one worker's "
                             "resources each")

    @model_validator(mode="before")
    @classmethod
    def _encoder_recipe(cls, data: Any) -> Any:
        """The encoder's recipe fills lr/epochs/batch_size when the input as given sets none of them, so a
        built config holds the values that will run (a full dump sets all three: read back, it stays)."""
        if isinstance(data, dict) and not set(RECIPE_FIELDS) & set(data):
            recipe = ENCODER_RECIPES.get(data.get("encoder", cls.model_fields["encoder"].default))
            if recipe is not None:
                return {**data, **recipe._asdict()}
        return data

    def recipe_note(self) -> str | None:
        """One line when lr/epochs/batch_size are the encoder's recipe (printed by `tkre finetune`)."""
        recipe = ENCODER_RECIPES.get(self.encoder)
        if recipe is None or (self.lr, self.epochs, self.batch_size) != recipe:
            return None
        return (f"{self.encoder}: its fine-tuning recipe applies (lr {recipe.lr:g}, {recipe.epochs} epochs, batch "
                f"{recipe.batch_size}; the paper's values suit RoBERTa-large) -- set lr, epochs or batch_size to "
                f"override")


class StagesConfig(StrictModel):
    """Which pipeline stages run (Table 3 ablations switch them off)."""

    edkg: bool = True
    scdg: bool = True
    pretrain_stage1: bool = True
    pretrain_stage2: bool = True
    finetune: bool = Field(True, description="fine-tune and test; false with both pre-training stages off is the "
                                             "generation-only mode (generator comparisons: no F1 in the row)")


class ExperimentConfig(StrictModel):
    """One experiment = one pipeline run, built resolved: `scdg.generator` None -> a copy of EDKG's and
    `scdg.samples_per_relation` None -> `data.k` are filled in at validation. Overrides go on the input
    (`experiment_for`, `apply_overrides`), not on a built config's dump (a filled-in K stays)."""

    name: str = "experiment"
    data: DataConfig = Field(default_factory=DataConfig)
    stages: StagesConfig = Field(default_factory=StagesConfig)
    edkg: EDKGConfig = Field(default_factory=EDKGConfig)
    scdg: SCDGConfig = Field(default_factory=SCDGConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    storage_path: str = Field("~/tkre_runs", description="artifacts + results: local dir or pyarrow.fs URI")

    @model_validator(mode="after")
    def _same_encoder(self) -> "ExperimentConfig":
        if self.pretrain.encoder != self.finetune.encoder and not self.finetune.allow_different_encoder:
            raise ValueError(
                f"pretrain.encoder ({self.pretrain.encoder!r}) and finetune.encoder ({self.finetune.encoder!r}) "
                f"differ, so golden-only and TKRE runs would fine-tune different encoders; set both to the same "
                f"model, or finetune.allow_different_encoder: true to do this on purpose")
        return self

    @model_validator(mode="after")
    def _fill_cross_section_defaults(self) -> "ExperimentConfig":
        if self.scdg.generator is None or self.scdg.samples_per_relation is None:
            self.scdg = self.scdg.model_copy(update={  # an assignment: validated again, then nothing to fill
                "generator": self.scdg.generator or self.edkg.generator.model_copy(deep=True),
                "samples_per_relation": self.scdg.samples_per_relation or self.data.k})
        return self

    def synthetic_asked_per_relation(self) -> int:
        """Synthetic samples asked per relation: scdg.samples_per_relation (0 when SCDG is off)."""
        return self.scdg.samples_per_relation if self.stages.scdg else 0

    def active_generators(self) -> list[GeneratorConfig]:
        """The generators the enabled stages use (EDKG's, then SCDG's)."""
        return ([self.edkg.generator] if self.stages.edkg else []) + ([self.scdg.generator] if self.stages.scdg else [])
