"""Top-1 accuracy as an ``evaluate`` metric module that ships with hf_plasticity.

``evaluate.load("accuracy")`` fetches its script from the Hub, which offline machines cannot reach; this
module is the same kind of script, loaded by local path (``evaluate.load(<this folder>)``), so users keep
the ``evaluate`` API and nothing is downloaded.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy: the fraction of predictions equal to their reference label."
_CITATION = ""
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): true labels.
    normalize (bool, default True): return the fraction of correct predictions instead of their count.
    sample_weight (list of float, optional): per-example weights.
Returns:
    accuracy (float): in [0, 1] (normalize=True) or the (weighted) count of correct predictions.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        correct = np.asarray(predictions) == np.asarray(references)
        weights = np.ones(len(correct)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        total = float((correct * weights).sum())
        return {"accuracy": total / float(weights.sum()) if normalize else total}
