"""Measure component plasticity of a ViT from Python: a Hub id or a local checkpoint, any image data set.

    # the bundled ViT, digits against Fashion-MNIST:
    python examples/measure_plasticity.py
    # the paper's set-up (ViT-Base in21k; CIFAR-10 test against ImageNet validation):
    python examples/measure_plasticity.py --model google/vit-base-patch16-224-in21k \\
        --data cifar10 --split test --reference imagenet-1k --reference-split validation --num-pairs 12800
    python examples/measure_plasticity.py --model ./my-checkpoint --data ./my-images --protocol in_situ

Prints the ranking of component types, the most plastic modules, and writes report.json + a figure.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_plasticity import THEORETICAL_RANKING, measure_plasticity
from hf_plasticity.data.loaders import load_named_dataset
from hf_plasticity.models import load_image_processor, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled", help="Hub id, local folder, or 'bundled'")
    parser.add_argument("--data", default="digits", help="downstream data: bundled name, folder or Hub id")
    parser.add_argument("--reference", default="fashion-mnist-sample", help="pretraining-like data ('' for none)")
    parser.add_argument("--split", default=None, help="split of the downstream data (Hub/saved data sets)")
    parser.add_argument("--reference-split", default=None, help="split of the reference data")
    parser.add_argument("--protocol", choices=["shared", "in_situ"], default="shared")
    parser.add_argument("--num-pairs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out-dir", type=Path, default=Path("plasticity-example"))
    parser.add_argument("--top", type=int, default=5, help="how many of the most plastic modules to list")
    args = parser.parse_args()

    model = load_model(args.model)
    report = measure_plasticity(
        model,
        load_named_dataset(args.data, split=args.split),
        load_named_dataset(args.reference, split=args.reference_split) if args.reference else None,
        protocol=args.protocol,
        num_pairs=args.num_pairs,
        batch_size=args.batch_size,
        device=args.device,
        image_processor=load_image_processor(args.model),
        data_name=args.data,
        reference_name=args.reference or None,
    )
    print(report.to_markdown())
    print(f"\ntheory:   {' > '.join(THEORETICAL_RANKING)}\nmeasured: {' > '.join(report.ranking())}")
    print(f"\nmost plastic modules: {', '.join(report.ranked_modules()[: args.top])}")
    report.save(args.out_dir / "report.json")
    report.plot(args.out_dir / "plasticity.png")
    print(f"\nwrote {args.out_dir / 'report.json'} and {args.out_dir / 'plasticity.png'}")


if __name__ == "__main__":
    main()
