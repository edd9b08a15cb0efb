"""Ray Train scaling for one training run (pre-training and fine-tuning alike): what each worker
reserves, and how many torch threads it runs."""

from __future__ import annotations

from pydantic import Field, model_validator

from tkre.config.base import StrictModel


class ResourcesConfig(StrictModel):
    """Ray Train scaling for one training run."""

    num_workers: int = Field(1, ge=1, description="Ray Train workers (DDP processes)")
    use_gpu: bool = Field(False, description="one GPU per worker when true")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per Train worker")
    threads: int | None = Field(None, ge=1, description="torch threads per Train worker (default: the whole CPUs "
                                   "of cpus_per_worker), e.g. 2 for 1.9 CPUs: sweep trials' drivers hold the rest")
    gpus_per_worker: float = Field(1.0, gt=0, description="GPUs per Train worker when use_gpu (a fraction shares "
                                                          "a GPU between runs)")
    custom: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources each Train worker (and each test-set evaluation "
                                          "actor) also reserves, e.g. {stage_node: 0.01}: a resource only some nodes "
                                          "advertise keeps the stage's work on them")

    @model_validator(mode="after")
    def _whole_gpus_above_one(self) -> "ResourcesConfig":
        if self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            raise ValueError("gpus_per_worker above 1 must be a whole number")
        return self

    def torch_threads(self) -> int:
        """What each worker passes to `torch.set_num_threads` (tkre.train_loop)."""
        return self.threads or max(1, int(self.cpus_per_worker))

    def per_worker(self) -> dict[str, float]:
        """What one Train worker reserves: Ray Train's `resources_per_worker` and the fit check's bundle."""
        return {"CPU": self.cpus_per_worker, **({"GPU": float(self.gpus_per_worker)} if self.use_gpu else {}),
                **self.custom}
