"""Two-stage knowledge-guided pre-training: MSLM (stage 1), then MSLM + SCL (stage 2), on Ray Train."""

from tkre.pretrain.stages import pretrain_stage1, pretrain_stage2, run_pretraining

__all__ = ["pretrain_stage1", "pretrain_stage2", "run_pretraining"]
