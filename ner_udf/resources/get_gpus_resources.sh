#!/usr/bin/env bash
# Spark GPU discovery script (spark.executor.resource.gpu.discoveryScript): prints the GPUs this node's
# executors may use as Spark's resource JSON, e.g. {"name": "gpu", "addresses": ["0","1"]}. The job
# runs each task on cuda:<address>, so the addresses are nvidia-smi's indices as the executor sees
# them (inside a YARN or Kubernetes container: the GPUs given to it, numbered from 0).
# Ships with ner_udf (ner_udf/resources/); README "Deploying" says where to put it.
set -euo pipefail
addresses=$(nvidia-smi --query-gpu=index --format=csv,noheader | sed -e 's/[[:space:]]//g' -e '/^$/d' -e 's/.*/"&"/' | paste -sd, -)
echo "{\"name\": \"gpu\", \"addresses\": [${addresses}]}"
