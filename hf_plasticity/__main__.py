"""``python -m hf_plasticity``: the same as the ``hf-plasticity`` command."""

import sys

from .cli import main

sys.exit(main())
