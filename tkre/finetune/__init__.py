"""Task-oriented fine-tuning: TYP Marker and GenPT classifiers trained on Ray Train (through the
shared loop in tkre.train_loop), best epoch by dev micro-F1, test micro-F1 of that epoch.

    run_finetune(cfg, train=..., dev=..., test=..., relations=..., no_relation=..., out_dir=...)
    evaluate_checkpoint(checkpoint_dir, examples, out_dir, split="test")

Modules: inputs (tokenizer, windowing), typ_marker, genpt (input building + models), spec
(checkpoint description), task (the TrainTask), evaluate (prediction, metrics, Ray Data), run.
"""

from tkre.finetune.evaluate import evaluate_checkpoint
from tkre.finetune.run import run_finetune, select_training_set
from tkre.finetune.spec import FinetuneSpec, load_checkpoint

__all__ = ["FinetuneSpec", "evaluate_checkpoint", "load_checkpoint", "run_finetune", "select_training_set"]
