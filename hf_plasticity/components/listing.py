"""The registry as people read it: ``hf-plasticity list`` prints these rows and ``docs/supported-models.md``
is rendered from them (``python scripts/render_supported_models.py``), so the two cannot disagree; a test
compares the committed page with :func:`supported_models_markdown`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .registry import refused_model_types, registered_maps, registered_model_types
from .specs import COMPONENT_DESCRIPTIONS, COMPONENTS


@dataclass(frozen=True)
class FamilyRow:
    """One registered family: its model types, where its blocks are, its input, and each component's modules."""

    family: str
    model_types: tuple[str, ...]
    blocks: str
    inputs: str
    components: tuple[tuple[str, str], ...]


def family_rows() -> list[FamilyRow]:
    """Every registered family, in registration order."""
    rows = []
    for cmap in registered_maps():
        blocks = ".".join(p for p in (cmap.tower, cmap.layers) if p)
        rows.append(FamilyRow(cmap.family, cmap.model_types, blocks, cmap.inputs, tuple(cmap.module_table())))
    return rows


def supported_models_markdown() -> str:
    """The text of ``docs/supported-models.md``."""
    header = ["model types", "blocks", "input", *COMPONENTS]
    lines = [
        "# Supported models",
        "",
        "<!-- Generated from the component registry by `python scripts/render_supported_models.py`; do not edit."
        " `hf-plasticity list` prints the same rows. -->",
        "",
        "Every family below is measured under both protocols, against a brute-force computation from the"
        " definition of each component, and tuned with `get_peft_model(model, PlasticityConfig(...))` (save,"
        " load, merge and unload exact), on tiny random models (`tests/components/test_families.py`). Paths"
        " are transformers 5.x module paths inside block `i` of the blocks' list; `a + b` means the component"
        " is both modules (outputs stacked, or attention followed by its output projection); *with flag*"
        " gives a config flag's variant. What each component is, family by family, is in"
        " [architectures.md](architectures.md).",
        "",
        f"Model types: {', '.join(f'`{t}`' for t in registered_model_types())}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in family_rows():
        names = ", ".join(f"`{t}`" for t in row.model_types)
        first = row.model_types[0]
        family = row.family[len(first) :] if row.family.startswith(first) else f" ({row.family})"
        cells = [names + family, f"`{row.blocks}`", f"`{row.inputs}`", *(text for _, text in row.components)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Component types", ""]
    lines += [f"- `{name}`: {COMPONENT_DESCRIPTIONS[name]}" for name in COMPONENTS]
    lines += [
        "",
        "## Refused, with the reason",
        "",
        "These model types raise `UnsupportedModelError` naming the reason and `register_component_map`, as does"
        " any model type not listed above:",
        "",
    ]
    lines += [f"- `{model_type}`: {reason}" for model_type, reason in refused_model_types().items()]
    return "\n".join(lines) + "\n"
