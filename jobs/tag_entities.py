"""spark-submit entry point: tag named entities in a Parquet corpus.

    spark-submit [spark options] jobs/tag_entities.py --config conf/local.yaml \
        [--input PATH] [--output PATH] [--model HUB_ID_OR_DIR] [--revision REV] \
        [--id-col NAME] [--text-col NAME] [--aggregation none|simple|first|average|max] \
        [--max-length N] [--stride N] [--set dotted.key=value ...]

The same command is installed as the ``ner-tag`` console script. See README.md.
"""

import sys
from pathlib import Path

try:
    from ner_udf.cli import main
except ImportError:  # running from a clone without `pip install`: use the package beside jobs/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ner_udf.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
