"""`make demo`: tag the bundled sample corpus with spark-submit and print a summary.

Runs the real job (jobs/tag_entities.py, conf/local.yaml) through spark-submit on the offline real
model (.cache/models/rampart), then reads the output tables back with DuckDB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    out = ROOT / "out" / "demo"
    submit = Path(sys.executable).parent / "spark-submit"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1", "HF_HUB_OFFLINE": "1"}
    cmd = [str(submit), "--master", "local[2]", "--conf", "spark.driver.host=127.0.0.1",
           "--conf", "spark.ui.showConsoleProgress=false", "--driver-memory", "2g",
           str(ROOT / "jobs" / "tag_entities.py"), "--config", str(ROOT / "conf" / "local.yaml"), "--output", str(out)]
    print("$", " ".join(cmd), flush=True)
    log = ROOT / "out" / "demo-spark.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        r = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=fh, text=True, stdin=subprocess.DEVNULL)
    print(r.stdout, end="")
    if r.returncode != 0:
        tail = log.read_text().strip().splitlines()[-5:]
        print("demo failed (exit %d); Spark log: %s\n%s" % (r.returncode, log, "\n".join(tail)), file=sys.stderr)
        return r.returncode
    m = json.loads((out / "manifest.json").read_text())
    c = m["counts"]
    print(f"\nModel: {m['model']['name']} (weights sha256 {str(m['model'].get('weights_sha256'))[:12]}…), "
          f"aggregation {m['config']['tagging']['aggregation']}, {m['config']['model']['precision']}")
    print("Documents by status:", ", ".join(f"{k}={v}" for k, v in c["documents"].items()))
    t = m["throughput"]
    print(f"Tokens: {c['tokens']}, windows: {c['windows']}; {t['seconds']} s in all: model load {t['model_load_s']} s, "
          f"tagging {t['tagging_s']} s at {t['tokens_per_s']} tokens/s, writing {t['writing_s']} s")
    print("Model loads per executor:", m["model_loads"])
    print("Peak memory per Python worker (MB):", ", ".join(
        f"{w}: " + ", ".join(f"{k} {v:,}" for k, v in p.items()) for w, p in m.get("worker_peak_rss_mb", {}).items()))
    print("Entities by label:", ", ".join(f"{k}={v}" for k, v in c["entities"].items()))
    print("\nTop entities per label:")
    rows = duckdb.sql(f"""
        select label, entity, count(*) n from read_parquet('{out}/entities/**/*.parquet', hive_partitioning = true)
        group by label, entity qualify row_number() over (partition by label order by n desc, entity) <= 5
        order by label, n desc, entity""").fetchall()
    current = None
    for label, entity, n in rows:
        if label != current:
            print(f"  {label}:")
            current = label
        print(f"    {n:4d}  {entity}")
    print(f"\nTables: {out}/entities/ (one row per entity), {out}/documents/ (one row per input row)")
    print(f"Manifest: {out}/manifest.json   Spark log: {log}")
    report = out / "_report" / "index.html"
    print(f"Report (charts: entities per label and per {m['config']['report']['by'] or 'date'}, documents by status, "
          f"scores, run history): {report if report.exists() else 'not written, see the Spark log'}")
    # ** and hive_partitioning: also right when output.partition_by splits the tables into day=.../ folders
    print(f"Try: duckdb -c \"select * from read_parquet('{out}/entities/**/*.parquet', hive_partitioning = true) "
          "limit 10\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
