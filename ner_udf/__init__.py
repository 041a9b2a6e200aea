"""Multilingual named-entity tagging for Spark: a pure inference core plus thin Spark glue.

The core (``config``, ``windows``, ``batching``, ``aggregation``, ``tagger``, ``model``) imports no
Spark; ``ner_udf.spark`` (glue), ``ner_udf.api`` (``tag_entities``: a DataFrame in, two out),
``ner_udf.store`` (output store), ``ner_udf.job`` (one run) and ``ner_udf.cli`` (command line) hold
the Spark job.
"""

from .aggregation import Entity, Strategy
from .api import tag_entities
from .config import Config, load_config
from .errors import UserError
from .tagger import DocResult, Tagger

__all__ = ["Config", "DocResult", "Entity", "Strategy", "Tagger", "UserError", "load_config", "tag_entities"]
__version__ = "0.1.0"
