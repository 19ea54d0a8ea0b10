"""The selection rules of ``PlasticityConfig``: one record each, read by the config, selection, CLI and cards.

A rule's name is at once the config keyword that holds its value (``PlasticityConfig(top_k=2)``), the key of the
CLI's ``--rule top_k=2`` and the ``selection.rule`` a model card records, so a new rule is one :func:`register`
call. The four built-in rules are also typed fields of ``PlasticityConfig`` (what ``adapter_config.json`` has always
stored); a registered rule without such a field is kept on the config as a plain attribute and saved beside them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..components import COMPONENTS, rank_components, validate_components
from ..errors import InvalidInputError


@dataclass(frozen=True)
class Candidates:
    """What every rule selects from: the candidate modules of the selected layers and what they score.

    Parameter counts are computed on demand (``cost``, ``base_parameters``): only a budget walks the model.
    """

    components: dict[str, str]
    """Candidate module path -> its component type (model order)."""
    scores: dict[str, float]
    """Candidate path -> the score it is ranked by (unscored candidates are absent)."""
    ranked: list[str]
    """The scored candidates, most plastic first (the one ranking rule)."""
    type_scores: dict[str, float]
    """Component type -> its score (the config's own, else the mean of its modules')."""
    heads: list[str]
    """Modules trained in full beside the selection (they count against a budget)."""
    cost: Callable[[str], int]
    """Parameters a candidate (or head) holds in the base model."""
    base_parameters: Callable[[], int]
    """Parameters the whole base model holds."""


@dataclass(frozen=True)
class SelectionRule:
    """One way to choose the modules to train from their scores.

    ``check`` refuses a bad value with the fix (and returns it normalised) when the config is built; ``parse`` reads
    the CLI's text (raising ``ValueError`` on text it cannot read); ``select`` returns the chosen candidate paths,
    most plastic first; ``describe`` words a value as a card records it (plain JSON, so a saved card reads the same);
    ``trained_types`` names the component types a value trains when the config alone tells (None: only the selected
    module paths do). ``ranked=False``: the value names what to train and no ranking chooses. ``per_module``: the rule
    ranks single modules, so the ``signal="auto"`` guard sets aside only the out-of-bound cells, not the measurement.
    """

    name: str
    syntax: str
    check: Callable[[Any], Any]
    parse: Callable[[str], Any]
    select: Callable[[Candidates, Any], list[str]]
    describe: Callable[[Any], str]
    trained_types: Callable[[Any, dict[str, float]], list[str] | None] = lambda value, scores: None
    ranked: bool = True
    per_module: bool = False


RULES: dict[str, SelectionRule] = {}
"""The registry, by name, in the order the config looks for the rule it was given."""
DEFAULT_RULE, DEFAULT_VALUE = "top_k", 1
"""What a config given no rule selects: attention alone, as the paper recommends."""


def register(rule: SelectionRule) -> SelectionRule:
    """Add a rule to the registry (a name already taken raises, so no rule is replaced by accident)."""
    if rule.name in RULES:
        raise InvalidInputError(f"a selection rule named {rule.name!r} is already registered; choose another name")
    RULES[rule.name] = rule
    return rule


def rule_of(config: Any) -> SelectionRule:
    """The rule a config applies (the first registered one it sets)."""
    return RULES[config.rule]


def parse_rule(text: str) -> dict[str, Any]:
    """``"top_k=1"`` -> ``{"top_k": 1}``: the CLI's ``--rule`` as ``PlasticityConfig`` keywords."""
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    rule = RULES.get(name)
    if not sep or rule is None or not value:
        raise InvalidInputError(f"rule {text!r} not understood; write one of {[r.syntax for r in RULES.values()]}")
    try:
        return {name: rule.parse(value)}
    except ValueError:
        raise InvalidInputError(f"rule {text!r}: {value!r} cannot be read; write {rule.syntax}") from None


def cli_help() -> str:
    """The ``--rule`` help text, from the registry."""
    return "Selection rule: " + ", ".join(r.syntax for r in RULES.values()) + "."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(name: str, value: Any) -> float:
    if not (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)):
        raise InvalidInputError(f"{name}={value!r} must be a finite number, e.g. {name}=0.3")
    return value


# ------------------------------------------------------------------------------------------------ top_k
def _check_top_k(value: Any) -> int:
    if not _is_int(value):
        raise InvalidInputError(f"top_k={value!r} must be an integer, e.g. top_k=2")
    if not 1 <= value <= len(COMPONENTS):
        raise InvalidInputError(
            f"top_k={value} but there are {len(COMPONENTS)} component types; pass 1 <= top_k <= {len(COMPONENTS)}"
        )
    return value


def _top_types(value: int, type_scores: dict[str, float]) -> list[str]:
    return rank_components(type_scores)[:value]


def _select_top_k(c: Candidates, value: int) -> list[str]:
    if value > len(c.type_scores):
        raise InvalidInputError(
            f"top_k={value} but only {len(c.type_scores)} component types have scores ({sorted(c.type_scores)}); "
            "lower top_k or measure more components"
        )
    kept = _top_types(value, c.type_scores)
    return [p for p in c.ranked if c.components[p] in kept]


# ------------------------------------------------------------------------------------------------ budget
def _check_budget(value: Any) -> float:
    if not 0 < _finite("budget", value) <= 1:
        raise InvalidInputError(f"budget={value} must be a fraction with 0 < budget <= 1 (e.g. 0.3)")
    return value


def _select_budget(c: Candidates, value: float) -> list[str]:
    """Greedy in ranking order: each module that still fits is taken, the head's cost counted first."""
    allowance = value * c.base_parameters()
    head_cost = sum(c.cost(h) for h in c.heads)
    if head_cost > allowance:
        raise InvalidInputError(
            f"budget={value} allows {int(allowance)} parameters but the head(s) {c.heads} alone have "
            f"{head_cost}; raise the budget or pass modules_to_save=[]"
        )
    used, chosen = head_cost, []
    for path in c.ranked:
        cost = c.cost(path)
        if used + cost <= allowance:
            chosen.append(path)
            used += cost
    if not chosen:
        smallest = min((c.cost(p) for p in c.ranked), default=0)
        raise InvalidInputError(
            f"budget={value} ({int(allowance)} parameters, {head_cost} taken by the head) fits no module; "
            f"the smallest needs {smallest}: raise the budget"
        )
    return chosen


# ------------------------------------------------------------------------------------------------ threshold
def _select_threshold(c: Candidates, value: float) -> list[str]:
    chosen = [p for p in c.ranked if c.scores[p] >= value]
    if not chosen:
        values = [c.scores[p] for p in c.ranked]
        raise InvalidInputError(
            f"no module has plasticity >= threshold={value} (scores range {min(values, default=math.nan):.4g} .. "
            f"{max(values, default=math.nan):.4g}); lower the threshold"
        )
    return chosen


# ------------------------------------------------------------------------------------------------ components
def _select_components(c: Candidates, value: list[str]) -> list[str]:
    """The named types: scored modules in ranking order, then the unscored ones in model order."""
    chosen = [p for p in c.ranked if c.components[p] in value]
    return chosen + [p for p, comp in c.components.items() if comp in value and p not in c.scores]


def _names(value: list[str]) -> str:
    return ", ".join(f"`{c}`" for c in value)


register(
    SelectionRule(
        name="top_k",
        syntax="top_k=K",
        check=_check_top_k,
        parse=int,
        select=_select_top_k,
        describe=lambda value: f"the {value} highest-ranked component type(s)",
        trained_types=_top_types,
    )
)
register(
    SelectionRule(
        name="budget",
        syntax="budget=FRACTION",
        check=_check_budget,
        parse=float,
        select=_select_budget,
        describe=lambda value: f"the highest-scored modules that fit a budget of {value:.0%} of the parameters",
        per_module=True,
    )
)
register(
    SelectionRule(
        name="threshold",
        syntax="threshold=SCORE",
        check=lambda value: _finite("threshold", value),
        parse=float,
        select=_select_threshold,
        describe=lambda value: f"every module scored at least {value}",
    )
)
register(
    SelectionRule(
        name="components",
        syntax="components=mha,ffn_fc1",
        check=lambda value: list(validate_components(value)),
        parse=lambda text: [c.strip() for c in text.split(",") if c.strip()],
        select=_select_components,
        describe=lambda value: f"the component types {_names(value)}",
        trained_types=lambda value, scores: list(value),
        ranked=False,
    )
)


__all__ = [
    "DEFAULT_RULE",
    "DEFAULT_VALUE",
    "RULES",
    "Candidates",
    "SelectionRule",
    "cli_help",
    "parse_rule",
    "register",
    "rule_of",
]
