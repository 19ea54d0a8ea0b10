"""``evaluate`` metrics that load offline: scripts shipped in this package, loaded by local path.

``evaluate.load("accuracy")`` downloads its script from the Hub; on a machine without internet it fails.
:func:`load_metric` loads the same kind of module from this package instead, so training code keeps
``evaluate``'s API (``compute``, ``add_batch``, distributed ``process_id``/``num_process``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from ...errors import InvalidInputError

BUNDLED_METRICS: tuple[str, ...] = ("accuracy",)


def metric_path(name: str) -> Path:
    """The folder of a bundled metric script, as ``evaluate.load`` takes it."""
    if name not in BUNDLED_METRICS:
        raise InvalidInputError(
            f"no bundled metric {name!r}; bundled: {list(BUNDLED_METRICS)}. For another metric pass its local "
            "script path to evaluate.load(path)"
        )
    return Path(str(resources.files("hf_plasticity.integrations.metrics") / name))


def load_metric(name: str = "accuracy", **kwargs: Any) -> Any:
    """``evaluate.load`` of a bundled metric by local path (works offline); kwargs go to ``evaluate.load``."""
    import evaluate

    return evaluate.load(str(metric_path(name)), **kwargs)
