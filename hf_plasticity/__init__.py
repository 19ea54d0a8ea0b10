"""hf_plasticity: which transformer components should you finetune? Measure their plasticity."""

from __future__ import annotations

__version__ = "0.1.0"
