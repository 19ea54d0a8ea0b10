"""Finetune the most plastic components of a ViT with transformers.Trainer, in code you can copy.

    python examples/finetune_trainer.py --output_dir ft-trainer                  # bundled ViT, digits, CPU
    python examples/finetune_trainer.py --output_dir ft --rule budget=0.05 --num_train_epochs 3
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 examples/finetune_trainer.py --output_dir ft

Every option of transformers.TrainingArguments works (HfArgumentParser). Steps: measure plasticity on the
downstream data (sharded over processes under accelerate launch), choose modules with a PlasticityConfig,
train with Trainer while PlasticityCallback logs gradient norms, weight change and re-measured plasticity,
evaluate accuracy (evaluate, offline), save the adapter, report, metrics and the plasticity series.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from transformers import HfArgumentParser, TrainingArguments

from hf_plasticity import PlasticityConfig, measure_plasticity
from hf_plasticity.data.loaders import load_named_dataset
from hf_plasticity.integrations.callbacks import PlasticityCallback
from hf_plasticity.integrations.training import finetune, new_head, parse_rule, pixel_dataset
from hf_plasticity.models import load_image_processor, load_model


@dataclass
class ExampleArguments:
    model: str = field(default="bundled", metadata={"help": "Hub id, local folder, or 'bundled'."})
    data: str = field(default="digits", metadata={"help": "Downstream data: bundled name, folder or Hub id."})
    rule: str = field(default="top_k=1", metadata={"help": "top_k=K | budget=F | threshold=S | components=a,b"})
    num_pairs: int = field(default=256, metadata={"help": "Pairs measured to choose the components."})
    watch_every: int = field(default=50, metadata={"help": "Re-measure plasticity every N steps."})


def main(argv: Sequence[str] | None = None) -> None:
    parser = HfArgumentParser((ExampleArguments, TrainingArguments))
    parser.set_defaults(learning_rate=1e-3, num_train_epochs=2, per_device_train_batch_size=32, report_to="none")
    ex, training_args = parser.parse_args_into_dataclasses(argv)

    data = load_named_dataset(ex.data)
    splits = data.train_test_split(test_size=0.2, seed=training_args.seed)
    model = load_model(ex.model, num_labels=len(data.features["label"].names), ignore_mismatched_sizes=True)
    new_head(model)
    processor = load_image_processor(ex.model)

    report = measure_plasticity(
        model, splits["train"], num_pairs=ex.num_pairs, image_processor=processor, seed=training_args.seed
    )
    config = PlasticityConfig.from_report(report, **parse_rule(ex.rule))

    held_out = pixel_dataset(splits["test"], processor, model.config.num_channels)[:128]["pixel_values"].float()
    watcher = PlasticityCallback((held_out[:64], held_out[64:]), every=ex.watch_every)

    result = finetune(
        model, splits["train"], splits["test"], config, training_args, image_processor=processor, callbacks=[watcher]
    )
    if result.trainer.is_world_process_zero():
        report.save(f"{training_args.output_dir}/report.json")
        print(f"trained {config.selected_modules}\neval: {result.eval_metrics}")


if __name__ == "__main__":
    main()
