"""Multilingual named-entity tagging for Spark: a pure inference core plus thin Spark glue.

The core (``config``, ``windows``, ``batching``, ``aggregation``, ``tagger``, ``model``) imports no
Spark; ``ner_udf.spark`` and ``ner_udf.cli`` hold the Spark job.
"""

from .aggregation import Entity, Strategy
from .config import Config, ConfigError, load_config
from .tagger import DocResult, Tagger

__all__ = ["Config", "ConfigError", "DocResult", "Entity", "Strategy", "Tagger", "load_config"]
__version__ = "0.1.0"
