"""``python -m ner_udf ...``: the same command as ``ner-tag``."""

import sys

from .cli import main

sys.exit(main())
