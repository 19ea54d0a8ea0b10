"""``hf-plasticity``: measure, show and demo from the shell. Thin: parse, call the library, print.

Each command's options are declared here without importing the library, so that the ``--help`` of every
command stays fast; each handler imports what it needs only when it runs."""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .components import (
    COMPONENTS,
    THEORETICAL_RANKING,
    get_component_map,
    registered_model_types,
    validate_components,
)
from .errors import InvalidInputError, PlasticityError
from .io import BothSpellings, FlagParser, add_output_dir_argument, check_output_paths, figure_format

if TYPE_CHECKING:
    from transformers import HfArgumentParser

    from .report.report import PlasticityReport


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hf-plasticity`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (PlasticityError, OSError) as exc:  # user error or the environment's: a message, never a traceback
        print(f"hf-plasticity: error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = FlagParser(
        prog="hf-plasticity",
        description="Measure the plasticity of transformer components: which parts are worth finetuning?",
    )
    sub = parser.add_subparsers(title="commands")

    m = sub.add_parser("measure", help="measure a model's component plasticity and write a JSON report")
    m.add_argument("--model", required=True, help="Hub id, local checkpoint folder, or 'bundled'")
    m.add_argument("--data", required=True, help="downstream data: a bundled name, a local folder or a Hub id")
    m.add_argument("--reference", help="pretraining-like data supplying x of each pair (default: pairs within --data)")
    m.add_argument("--split", help="split of the downstream data for Hub or saved data sets (default: test)")
    m.add_argument("--reference-split", help="split of the reference data (default: test)")
    m.add_argument("--out", required=True, type=Path, help="where to write the report (JSON)")
    m.add_argument("--plot", type=Path, help="also write the figure (PNG, SVG or PDF)")
    m.add_argument(
        "--image-processor",
        metavar="NAME_OR_PATH",
        help="image processor (Hub id or folder with preprocessor_config.json) for a checkpoint that ships none",
    )
    m.add_argument(
        "--tokenizer",
        metavar="NAME_OR_PATH",
        help="text models: tokenizer (Hub id or folder) when the model folder has none (default: the model's own)",
    )
    m.add_argument(
        "--seq-len",
        type=int,
        help="text models: tokens per window cut from the text (default: 128, at most what the model takes)",
    )
    m.add_argument("--text-column", help="text models: the data sets' text column, when they have several")
    big = m.add_argument_group("models larger than memory (Accelerate's big-model loading; see docs/big-models.md)")
    big.add_argument("--device-map", help="from_pretrained's device_map, e.g. auto (offloads what does not fit)")
    big.add_argument(
        "--max-memory",
        action="append",
        metavar="DEVICE=SIZE",
        help="with --device-map: memory per device for the weights, e.g. cpu=8GiB or 0=20GiB (repeatable)",
    )
    big.add_argument("--offload-folder", type=Path, help="with --device-map: where weights that do not fit go")
    big.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="load the weights in this dtype")
    llm = m.add_argument_group("causal LMs: what to train, written beside the report")
    llm.add_argument(
        "--unfrozen-budget",
        type=float,
        help="share of parameters in the Axolotl unfrozen_parameters list (<out>.axolotl.yaml; default 0.25)",
    )
    llm.add_argument(
        "--lora-budget",
        type=float,
        help="share of parameters of the plasticity LoraConfig (<out>-lora/adapter_config.json; default 0.04)",
    )
    _measure_options(m)
    m.set_defaults(run=_run_measure)

    d = sub.add_parser("demo", help="measure the bundled ViT: Fashion-MNIST as reference, digits as downstream")
    add_output_dir_argument(d, Path("plasticity-demo"), "where to write report.json and plasticity.png")
    _measure_options(d)
    d.set_defaults(run=_run_demo)

    s = sub.add_parser("show", help="print a saved report's ranking (and optionally plot it)")
    s.add_argument("report", type=Path)
    s.add_argument("--per-layer", action="store_true", help="also print the per-layer table")
    s.add_argument("--plot", type=Path, help="write the figure")
    s.set_defaults(run=_run_show)

    _add_card_command(sub)
    _add_select_command(sub)

    ls = sub.add_parser("list", help="list supported model types, components and bundled data sets")
    ls.set_defaults(run=_run_list)
    _add_finetune(sub)
    _add_reproduce(sub)
    return parser


def _measure_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", choices=["shared", "in_situ"], default="shared", help="default: shared (paper)")
    p.add_argument("--num-pairs", type=int, help="pairs to measure (default: all the data allow, at most 12800)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--components", nargs="+", metavar="NAME", help=f"subset of {', '.join(COMPONENTS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="e.g. cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--per-layer", action="store_true", help="also print the per-layer table")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _run_measure(args: argparse.Namespace) -> int:
    from .data.loaders import load_named_dataset

    validate_components(args.components)  # fail before anything is loaded
    inputs = [args.model, args.data, args.reference, args.image_processor, args.tokenizer]
    axolotl, lora = llm_outputs(args.out)
    outputs = {"--out": args.out, "--plot": args.plot, "the Axolotl list": axolotl, "the LoRA config": lora}
    check_output_paths(outputs, inputs=inputs)
    for flag, value in (("--unfrozen-budget", args.unfrozen_budget), ("--lora-budget", args.lora_budget)):
        if value is not None and not 0 < value <= 1:
            raise InvalidInputError(f"{flag}={value} must be a fraction with 0 < {flag} <= 1")
    args.load_kwargs = _load_kwargs(args)
    if args.plot is not None:
        figure_format(args.plot, "--plot")
    data = load_named_dataset(args.data, split=args.split)
    reference = None if args.reference is None else load_named_dataset(args.reference, split=args.reference_split)
    _measure_and_print(args, args.model, data, reference, args.data, args.reference, args.out, args.plot)
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from .data.loaders import load_digits_dataset
    from .models import BUNDLED, pretraining_reference

    reference, ref_name = pretraining_reference()
    out = args.output_dir
    check_output_paths({"report": out / "report.json", "figure": out / "plasticity.png"})
    print(f"Bundled ViT (pretrained on Fashion-MNIST); reference: {ref_name}; downstream: scikit-learn digits")
    report = _measure_and_print(
        args,
        BUNDLED,
        load_digits_dataset(),
        reference,
        "digits",
        ref_name,
        out / "report.json",
        out / "plasticity.png",
    )
    agree = report.ranking() == [c for c in THEORETICAL_RANKING if c in report.components]
    print(f"\nTheory (paper): {' > '.join(THEORETICAL_RANKING)}")
    print(f"Measured:       {' > '.join(report.ranking())}   ({'agrees' if agree else 'differs'})")
    return 0


def _measure_and_print(
    args: argparse.Namespace,
    model_name: str,
    data: object,
    reference: object,
    data_name: str,
    reference_name: str | None,
    out: Path,
    plot: Path | None,
) -> PlasticityReport:
    import torch

    from .measure.estimator import measure_plasticity
    from .models import BUNDLED, BUNDLED_MODEL_ID, load_image_processor, load_model, load_tokenizer

    load_kwargs = getattr(args, "load_kwargs", {})
    dispatched = "device_map" in load_kwargs  # Accelerate places the layers: no device to move them to
    device = None if dispatched else args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    processor_name = getattr(args, "image_processor", None)
    if processor_name is not None:  # named by the user: a bad name fails before the model loads
        processor = load_image_processor(processor_name, required=True)
    tokenizer_name = getattr(args, "tokenizer", None)
    tokenizer = None if tokenizer_name is None else load_tokenizer(tokenizer_name, required=True)
    model = load_model(model_name, **load_kwargs)
    if processor_name is None:
        processor = load_image_processor(model_name)
    start = time.perf_counter()
    report = measure_plasticity(
        model,
        data,
        reference,
        protocol=args.protocol,
        num_pairs=args.num_pairs,
        batch_size=args.batch_size,
        components=args.components,
        device=device,
        image_processor=processor,
        tokenizer=tokenizer,
        seq_len=getattr(args, "seq_len", None),
        text_column=getattr(args, "text_column", None),
        seed=args.seed,
        progress=not args.no_progress,
        data_name=data_name,
        reference_name=reference_name,
    )
    elapsed = time.perf_counter() - start
    if model_name == BUNDLED:  # not the install path: the same model on every machine
        report.model["model_id"] = BUNDLED_MODEL_ID
    report.save(out)
    print(f"\n{report.num_pairs} pairs, {report.protocol} protocol, {elapsed:.1f} s on {device}")
    if report.excluded_pairs:
        print(f"{report.excluded_pairs} pair(s) with zero input distance were excluded")
    print(report.to_markdown(per_layer=args.per_layer))
    print(f"\nreport: {out}")
    if plot is not None:
        report.plot(plot)
        print(f"figure: {plot}")
    if hasattr(args, "unfrozen_budget") and get_component_map(model).causal:
        _write_llm_outputs(args, model, report, out)
    return report


def llm_outputs(out: Path) -> tuple[Path, Path]:
    """Beside a causal LM's report: Axolotl's ``unfrozen_parameters`` list, and the LoRA config's folder."""
    return out.with_name(out.stem + ".axolotl.yaml"), out.with_name(out.stem + "-lora")


def _write_llm_outputs(args: argparse.Namespace, model: Any, report: PlasticityReport, out: Path) -> None:
    from .tuner import (
        DEFAULT_LORA_BUDGET,
        DEFAULT_UNFROZEN_BUDGET,
        axolotl_unfrozen_parameters,
        plasticity_lora_config,
        write_axolotl_unfrozen_parameters,
    )

    axolotl, lora = llm_outputs(out)
    unfrozen = DEFAULT_UNFROZEN_BUDGET if args.unfrozen_budget is None else args.unfrozen_budget
    patterns = axolotl_unfrozen_parameters(report, model, budget=unfrozen)
    write_axolotl_unfrozen_parameters(axolotl, patterns, report.model.get("model_id") or args.model)
    print(f"Axolotl unfrozen_parameters ({len(patterns)} modules, {unfrozen:g} of the parameters): {axolotl}")
    budget = DEFAULT_LORA_BUDGET if args.lora_budget is None else args.lora_budget
    config = plasticity_lora_config(report, model=model, budget=budget, modules_to_save=[])  # LM head: pretrained
    config.save_pretrained(str(lora))
    print(f"LoraConfig ({len(config.target_modules)} modules, {budget:g} of the parameters): {lora}")


def _load_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """from_pretrained keywords of the big-model flags; memory without a device map is refused with the fix."""
    kwargs: dict[str, Any] = {}
    if args.dtype is not None:
        kwargs["dtype"] = args.dtype
    if args.device_map is None:
        if args.max_memory or args.offload_folder:
            raise InvalidInputError("--max-memory and --offload-folder place a model's layers: add --device-map auto")
        return kwargs
    if args.device is not None:
        raise InvalidInputError("--device with --device-map: the device map places every layer; pass one of them")
    kwargs["device_map"] = args.device_map
    if args.offload_folder is not None:
        kwargs["offload_folder"] = str(args.offload_folder)
    if args.max_memory:
        memory: dict[Any, int | str] = {}
        for item in args.max_memory:
            key, sep, size = item.partition("=")
            if not sep or not key or not size:
                raise InvalidInputError(f"--max-memory {item!r}: write DEVICE=SIZE, e.g. cpu=8GiB or 0=20GiB")
            memory[int(key) if key.isdigit() else key] = int(size) if size.isdigit() else size  # bytes, or "8GiB"
        kwargs["max_memory"] = memory
    return kwargs


def _run_show(args: argparse.Namespace) -> int:
    from .report.report import PlasticityReport

    if args.plot is not None:
        check_output_paths({"--plot": args.plot}, inputs=[args.report])
        figure_format(args.plot, "--plot")
    report = PlasticityReport.load(args.report)
    print(repr(report))
    print(report.to_markdown(per_layer=args.per_layer))
    if args.plot is not None:
        report.plot(args.plot)
        print(f"figure: {args.plot}")
    return 0


def _run_list(args: argparse.Namespace) -> int:
    from .components import COMPONENT_DESCRIPTIONS
    from .components.listing import family_rows
    from .data.loaders import available_datasets

    print("model types: " + ", ".join(registered_model_types()))
    print("families (module paths relative to a block):")
    for row in family_rows():
        print(f"  {row.family} [{', '.join(row.model_types)}]: blocks {row.blocks}.{{i}}, input {row.inputs}")
        for comp, text in row.components:
            print(f"    {comp:<10} {text}")
    print("components:")
    for name in COMPONENTS:
        print(f"  {name:<10} {COMPONENT_DESCRIPTIONS[name]}")
    print("bundled data sets: " + ", ".join(available_datasets()))
    return 0


# ------------------------------------------------------------------------------------------ card
def _add_card_command(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "card",
        help="write a model card carrying the plasticity ranking (merged into an existing README), optionally push",
        description="Build the model card of a plasticity adapter (or, from a report alone, of the measured model): "
        "metadata with the ranking, the trained modules and the results; the ranked table, the figure, how to load "
        "it. An existing README is merged, never overwritten.",
    )
    c.add_argument("--report", type=Path, help="a report written by `hf-plasticity measure`")
    c.add_argument("--adapter", type=Path, help="a saved plasticity adapter folder (save_pretrained output)")
    c.add_argument("--metrics", type=Path, help="JSON of evaluation results, e.g. the Trainer's eval_results.json")
    c.add_argument("--out", type=Path, help="where to write the card file (default: the adapter's README.md)")
    add_output_dir_argument(
        c, None, "write README.md, plasticity.png and plasticity_report.json to this folder (instead of --out)"
    )
    c.add_argument("--base-model", help="Hub id of the base model (default: from the adapter or the report)")
    c.add_argument("--dataset", action="append", dest="datasets", help="Hub id of a data set used (repeatable)")
    c.add_argument("--push", metavar="REPO", help="also push the adapter, report, figure and card to this Hub repo")
    c.add_argument("--private", action="store_true", help="create the pushed repo private")
    c.add_argument("--revision", help="branch to push to")
    c.add_argument("--bundled", action="store_true", help=argparse.SUPPRESS)  # moved to scripts/: says so
    c.set_defaults(run=_run_card)


def _run_card(args: argparse.Namespace) -> int:
    from .errors import InvalidInputError
    from .integrations.cards import FIGURE_NAME, REPORT_NAME, build_model_card, write_model_card
    from .report.report import PlasticityReport

    if args.bundled:
        raise InvalidInputError(
            "the bundled model's card is maintainer tooling, not part of the package: run "
            "`python scripts/regenerate_bundled_card.py` from a source checkout"
        )
    if args.report is None and args.adapter is None:
        raise InvalidInputError("pass --report, --adapter or both")
    if args.out is not None and args.output_dir is not None:
        raise InvalidInputError(
            "pass --out (the card file) or --output-dir (a folder for card, figure, report), not both"
        )
    if args.output_dir is not None:
        out = args.output_dir / "README.md"
    else:
        out = args.out or (args.adapter / "README.md" if args.adapter else None)
    if out is None:
        raise InvalidInputError("pass --output-dir (or --out, the card file) when there is no --adapter")
    report = PlasticityReport.load(args.report) if args.report else None
    options = {"metrics": args.metrics, "base_model": args.base_model, "datasets": args.datasets}
    card = build_model_card(args.adapter or report, report=report, repo_id=args.push, **options)
    folder = out.parent
    if report is not None:
        report.plot(folder / FIGURE_NAME)
        if args.output_dir is not None or (args.adapter is not None and folder.resolve() == args.adapter.resolve()):
            report.save(folder / REPORT_NAME)
    write_model_card(card, out)
    print(f"wrote {out}")
    if args.push:
        from .integrations.hub import push_card_files

        info = push_card_files(
            out,
            args.push,
            adapter=args.adapter,
            report=report,
            figure=folder / FIGURE_NAME if report is not None else None,
            private=args.private or None,
            revision=args.revision,
        )
        print(f"pushed to {info.commit_url}")
    return 0


# ------------------------------------------------------------------------------------------ select
def _add_select_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "select",
        help="write plasticity-guided targets as JSON: LoRA kwargs for peft.LoraConfig, or modules/blocks to train",
        description="From a saved report, choose what to train and write it as JSON: with --unit linear, keyword "
        "arguments of peft.LoraConfig (LoraConfig(**json.load(f))); with --unit module or block, the modules to "
        "train at full rank, the head(s) and a regex of the parameter names to unfreeze.",
    )
    p.add_argument("--report", required=True, type=Path, help="a report written by `hf-plasticity measure`")
    p.add_argument("--model", default="bundled", help="the model the report measured (Hub id, folder, 'bundled')")
    how = p.add_mutually_exclusive_group()  # none given: the helpers raise InvalidInputError naming the three
    how.add_argument("--top-p", dest="top_p", type=float, help="fraction kept: max(1, floor(N * p))")
    how.add_argument("--num-modules", dest="num_modules", type=int, help="number kept")
    how.add_argument("--budget", type=float, help="LoRA only: ranks filling this share of the parameters")
    p.add_argument("--unit", choices=["linear", "module", "block"], default="linear", help="default: linear (LoRA)")
    p.add_argument("--r", type=int, default=8, help="LoRA rank (and lora_alpha) for --top-p/--num-modules")
    p.add_argument("--output", required=True, type=Path, help="the JSON file to write")
    p.set_defaults(run=_run_select)


def _run_select(args: argparse.Namespace) -> int:
    import json

    from .errors import InvalidInputError
    from .io import atomic_write_text
    from .models import load_model
    from .tuner.targets import find_plasticity_target_modules, find_plasticity_trainable_modules

    check_output_paths({"--output": args.output}, inputs=[args.report, args.model])
    if args.unit != "linear" and args.budget is not None:
        raise InvalidInputError("--budget allocates LoRA ranks: use it with --unit linear, or pass --top-p")
    if args.r < 1:
        raise InvalidInputError(f"--r {args.r} must be a positive rank")
    model = load_model(args.model)
    rule = {k: getattr(args, k) for k in ("top_p", "num_modules", "budget") if getattr(args, k) is not None}
    if args.unit == "linear":
        found = find_plasticity_target_modules(model, args.report, **rule)
        if "rank_pattern" not in found:
            found = {**found, "r": args.r, "lora_alpha": args.r}
    else:
        found = find_plasticity_trainable_modules(model, args.report, blocks=args.unit == "block", **rule)
    atomic_write_text(args.output, json.dumps(found, indent=1) + "\n")
    chosen = found.get("target_modules") or found.get("modules") or []
    more = " ..." if len(chosen) > 4 else ""
    print(f"{len(chosen)} {args.unit}(s) chosen, most plastic first: {', '.join(chosen[:4])}{more}")
    print(f"wrote {args.output}")
    return 0


# ----------------------------------------------------------------------------- finetune
FINETUNE_DEFAULTS = {
    "learning_rate": 1e-3,
    "num_train_epochs": 2.0,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 128,
    "eval_strategy": "epoch",
    "save_strategy": "no",
    "logging_steps": 10,
    "report_to": "none",
}
"""TrainingArguments defaults of ``hf-plasticity finetune`` (sized for the bundled model); any flag overrides."""


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    # Every option goes to HfArgumentParser((FinetuneArguments, TrainingArguments)), built only when this
    # command runs (it imports transformers); '+' as the only prefix makes argparse hand it all the words.
    f = sub.add_parser(
        "finetune",
        help="measure, select, train with Trainer, evaluate, save (--help lists every TrainingArguments option)",
        prefix_chars="+",
        add_help=False,
    )
    f.add_argument("options", nargs="*", help="--model, --data, --rule, --output-dir and TrainingArguments")
    f.set_defaults(run=_run_finetune)


def finetune_parser() -> HfArgumentParser:
    """``HfArgumentParser`` of ``FinetuneArguments`` and ``TrainingArguments``, with this command's defaults.

    Like every command, it takes ``--num-pairs`` and ``--num_pairs`` alike and shows the hyphenated spelling.
    """
    from transformers import HfArgumentParser, TrainingArguments

    from .integrations.training import FinetuneArguments

    class FinetuneParser(BothSpellings, HfArgumentParser):
        pass

    parser = FinetuneParser(
        (FinetuneArguments, TrainingArguments),  # type: ignore[arg-type]
        prog="hf-plasticity finetune",
        description="Measure plasticity, select the most plastic components, train them with transformers.Trainer, "
        "evaluate, and write the adapter, the report and the metrics to --output-dir. Without other options: the "
        "bundled ViT on scikit-learn digits, in a few minutes on 2 CPU cores.",
    )
    parser.set_defaults(**FINETUNE_DEFAULTS)
    return parser


def _run_finetune(args: argparse.Namespace) -> int:
    # the old spelling --out-dir (--out_dir) is an alias of --output-dir, as on every command that writes a folder
    options = [re.sub(r"^--out[-_]dir(?==|$)", "--output-dir", o) for o in args.options]
    if not any(o.split("=")[0] in ("--output_dir", "--output-dir") for o in options) and not {"-h", "--help"} & set(
        options
    ):  # answered before transformers is imported
        argparse.ArgumentParser(prog="hf-plasticity finetune").error(
            "--output-dir is required (where the adapter, report and metrics go)"
        )
    parser = finetune_parser()
    ft_args, training_args = parser.parse_args_into_dataclasses(options)
    from .integrations.training import run_finetune

    result = run_finetune(ft_args, training_args)
    if training_args.process_index == 0:
        from .integrations.cards.metadata import choice
        from .report.tables import pairs_sentence

        chosen = result.model.peft_config["default"]
        how = choice(chosen)
        if result.report is not None:
            r = result.report
            print(f"\nmeasured on {pairs_sentence(r.num_pairs, r.data_name, r.reference_name, r.protocol)}")
            print(r.to_markdown())
        print(f"\nselected ({len(chosen.selected_modules)} modules): rule {ft_args.rule}, by the {how['selected_by']}")
        if how["fallback"]:
            print(f"why not the measured ranking: {how['fallback']}")
        print(f"\neval: {result.eval_metrics}")
        for name, path in sorted(result.files.items()):
            print(f"{name}: {path}")
    return 0


# ----------------------------------------------------------------------------- reproduce


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    from .reproduce.command import add_arguments

    r = sub.add_parser(
        "reproduce",
        help="reproduce the paper's component-wise finetuning on real data with the bundled ViT",
        description="Measure the bundled ViT's plasticity on each downstream task, finetune every component type "
        "alone, full finetuning, linear probing, LoRA and the package's selections, and write the results table, "
        "Spearman and Wilcoxon statistics and a figure. Needs the reproduce extra: "
        "pip install 'hf-plasticity[reproduce]'.",
    )
    add_arguments(r)
    r.set_defaults(run=_run_reproduce)


def _run_reproduce(args: argparse.Namespace) -> int:
    from .reproduce.command import run_from_args

    return run_from_args(args, ["hf-plasticity", "reproduce"])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
