"""Which partition tags which texts: buckets of texts (by a hash of the text) placed on partitions
by their cost, so that no task is left with several of the few long documents.

No Spark import: :func:`plan_buckets` is the whole decision, given each bucket's cost, and
:func:`spark_int_hash` finds the key that sends a row to a given partition; the Spark side
(:func:`ner_udf.spark.spread`) measures the costs and moves the rows.
"""

from __future__ import annotations

import heapq
import re
from typing import Mapping

BUCKETS_PER_PARTITION = 64  # fine enough that LPT can even out the loads
MAX_BUCKETS = 16_384        # the plan is a literal array in the query: keep it small


def resolve(balance: str, master: str, slots: int) -> str:
    """``tagging.balance`` as a session with Spark master ``master`` and ``slots`` task slots runs
    it. ``auto`` is ``hash`` on a local master with one task slot, ``cost`` everywhere else: tasks
    that run one after another end at the same time however the texts are spread, so there the
    measuring scan would be pure cost. A cluster's executors can come and go (dynamic
    allocation), so its slot count at the start is never taken as fixed: ``cost``."""
    if balance != "auto":
        return balance
    return "hash" if local_master(master) and slots == 1 else "cost"


def local_master(master: str | None) -> bool:
    """Whether Spark master ``master`` runs the tasks as threads of the driver (``local``,
    ``local[N]``, ``local[*]``, ``local[N,F]``; not ``local-cluster[...]``, which has executors),
    as Spark's ``Utils.isLocalMaster``: there dynamic allocation is never in effect."""
    return re.fullmatch(r"local(\[[^\]]*\])?", master or "") is not None


def bucket_count(partitions: int) -> int:
    """How many buckets the texts are hashed into for ``partitions`` partitions (at least one each)."""
    return max(partitions, min(partitions * BUCKETS_PER_PARTITION, MAX_BUCKETS))


def plan_buckets(costs: Mapping[int, int], buckets: int, partitions: int) -> list[int]:
    """The partition of each of ``buckets`` buckets, given the cost of the non-empty ones
    (``{bucket: cost}``): LPT greedy, the most costly bucket first onto the least loaded partition.
    Deterministic (equal costs by bucket id, equal loads by partition index), so that a retried
    stage or a second plan of the same input places every text where the first did. Buckets
    without a cost (empty when measured) are spread round-robin: rows the measurement did not
    see still land somewhere valid."""
    if partitions < 1:
        raise ValueError(f"partitions: got {partitions}, need at least 1")
    plan = [b % partitions for b in range(buckets)]
    loads = [(0, p) for p in range(partitions)]  # a heap of (load, partition)
    for bucket, cost in sorted(costs.items(), key=lambda bc: (-bc[1], bc[0])):
        if not 0 <= bucket < buckets:
            raise ValueError(f"bucket {bucket} is not in 0..{buckets - 1}")
        load, p = heapq.heappop(loads)
        plan[bucket] = p
        heapq.heappush(loads, (load + cost, p))
    return plan


def partition_loads(costs: Mapping[int, int], plan: list[int], partitions: int) -> list[int]:
    """Each partition's total cost under ``plan``."""
    loads = [0] * partitions
    for bucket, cost in costs.items():
        loads[plan[bucket]] += cost
    return loads


def spark_int_hash(value: int, seed: int = 42) -> int:
    """Spark's ``hash()`` of an int column (Murmur3 x86_32 ``hashInt``, seed 42): what hash
    partitioning sends a row keyed ``value`` by, as a signed 32-bit int."""
    mask = 0xFFFFFFFF

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & mask

    k1 = rotl((value & mask) * 0xCC9E2D51 & mask, 15) * 0x1B873593 & mask
    h1 = (rotl((seed & mask) ^ k1, 13) * 5 + 0xE6546B64) & mask
    h1 ^= 4  # the input's length in bytes
    h1 ^= h1 >> 16
    h1 = h1 * 0x85EBCA6B & mask
    h1 ^= h1 >> 13
    h1 = h1 * 0xC2B2AE35 & mask
    h1 ^= h1 >> 16
    return h1 - (1 << 32) if h1 & 0x80000000 else h1
