"""Write docs/supported-models.md from the component registry (the rows `hf-plasticity list` prints).

Run after registering, changing or refusing a family: `python scripts/render_supported_models.py`.
tests/test_docs.py fails while the committed page differs from what this writes.
"""

from __future__ import annotations

from pathlib import Path

from hf_plasticity.components.listing import supported_models_markdown

PAGE = Path(__file__).resolve().parents[1] / "docs" / "supported-models.md"

if __name__ == "__main__":
    PAGE.write_text(supported_models_markdown(), encoding="utf-8")
    print(f"wrote {PAGE}")
