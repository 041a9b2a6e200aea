"""The run report: ``OUTPUT/_report/index.html`` with PNG charts, written after every committed run
and by ``ner-tag report OUTPUT``.

What it shows, computed with Spark from the committed tables (so it scales with them) and from the
run history (``OUTPUT/_runs/``): entities per label, entities per label and a pass-through column
(``report.by``, default the first pass-through column), documents by status, the score histogram
per label, throughput and documents tagged across runs, the top entities per label, the model and
the configuration. ``_report`` starts with ``_``: Spark, pyarrow and DuckDB readers of the tables
skip it.
"""

from __future__ import annotations

import html
import json
import tempfile
from pathlib import Path

REPORT = "_report"
TOP = 10
BINS = 20


def collect(spark, tables: dict[str, str], manifest: dict, history: list[dict], by: str | None) -> dict:
    """The figures the report shows (plain Python values), from the committed tables (``tables``:
    name -> URI)."""
    from pyspark.sql import functions as F

    from .spark import read_table

    ents, docs = read_table(spark, tables["entities"]), read_table(spark, tables["documents"])
    data: dict = {"by": by if by in ents.columns else None}
    data["labels"] = {r["label"]: r["count"] for r in ents.groupBy("label").count().orderBy(F.desc("count")).collect()}
    data["status"] = {r["status"]: r["count"] for r in docs.groupBy("status").count().orderBy("status").collect()}
    if data["by"]:
        data["label_by"] = [(r["label"], None if r[by] is None else str(r[by]), r["count"])
                            for r in ents.groupBy("label", by).count().collect()]
    bucket = F.least(F.floor(F.col("score") * BINS), F.lit(BINS - 1)).cast("int")
    data["scores"] = [(r["label"], r["b"], r["count"])
                      for r in ents.groupBy("label", bucket.alias("b")).count().collect()]
    from pyspark.sql.window import Window

    top = ents.groupBy("label", "entity").count().withColumn(
        "rank", F.row_number().over(Window.partitionBy("label").orderBy(F.desc("count"), "entity")))
    data["top"] = [(r["label"], r["entity"], r["count"]) for r in top.where(F.col("rank") <= TOP).collect()]
    data["history"] = [{"run_id": m.get("run_id"), "started_at": m.get("started_at"),
                        "tagged": m.get("counts", {}).get("input", {}).get("tagged"),
                        "tokens_per_s": m.get("throughput", {}).get("tokens_per_s")} for m in history]
    data["manifest"] = {k: manifest.get(k) for k in ("run_id", "started_at", "finished_at", "model", "config",
                                                     "counts", "throughput")}
    return data


def render(data: dict, folder: Path) -> list[str]:
    """Write the charts (PNG) and ``index.html`` for ``data`` into ``folder``; the files' names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    charts: list[tuple[str, str]] = []

    def save(fig, name: str, title: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / name, dpi=90)
        plt.close(fig)
        charts.append((name, title))

    labels = data["labels"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if labels:
        ax.barh(list(labels)[::-1], list(labels.values())[::-1], color="#4878a8")
    else:
        ax.text(0.5, 0.5, "no entities", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("entities")
    save(fig, "entities_per_label.png", "Entities per label")

    fig, ax = plt.subplots(figsize=(7, 3))
    status = data["status"]
    ax.bar(list(status), list(status.values()), color="#6a9f58")
    ax.set_ylabel("documents")
    save(fig, "documents_by_status.png", "Documents by status")

    if data.get("by") and data.get("label_by"):
        by_values = sorted({v for _, v, _ in data["label_by"]}, key=lambda v: (v is None, v or ""))[:30]
        fig, ax = plt.subplots(figsize=(8, 4))
        bottom = [0] * len(by_values)
        for label in labels:
            counts = {v: n for lab, v, n in data["label_by"] if lab == label}
            heights = [counts.get(v, 0) for v in by_values]
            ax.bar([str(v) for v in by_values], heights, bottom=bottom, label=label)
            bottom = [b + h for b, h in zip(bottom, heights)]
        ax.set_ylabel("entities")
        ax.legend(fontsize=7, ncol=2)
        ax.tick_params(axis="x", rotation=60, labelsize=7)
        save(fig, "entities_per_label_and_by.png", f"Entities per label and {data['by']}")

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for label in labels:
        counts = {b: n for lab, b, n in data["scores"] if lab == label}
        ax.plot([(b + 0.5) / BINS for b in range(BINS)], [counts.get(b, 0) for b in range(BINS)], label=label)
    ax.set_xlabel("score")
    ax.set_ylabel("entities")
    if labels:
        ax.legend(fontsize=7, ncol=2)
    save(fig, "scores_per_label.png", "Score histogram per label")

    history = data["history"]
    fig, ax1 = plt.subplots(figsize=(7, 3))
    xs = list(range(1, len(history) + 1))
    ax1.bar(xs, [h["tagged"] or 0 for h in history], color="#c4a35a", label="documents tagged")
    ax1.set_xlabel("run (oldest first)")
    ax1.set_ylabel("documents tagged")
    ax2 = ax1.twinx()
    ax2.plot(xs, [h["tokens_per_s"] or 0 for h in history], color="#333333", marker="o", label="tokens/s")
    ax2.set_ylabel("tokens/s (tagging)")
    save(fig, "run_history.png", "Runs: documents tagged and tagging throughput")

    (folder / "index.html").write_text(_html(data, charts), encoding="utf-8")
    return [name for name, _ in charts] + ["index.html"]


def _html(data: dict, charts: list[tuple[str, str]]) -> str:
    e = html.escape
    m = data["manifest"]
    top_rows = "".join(f"<tr><td>{e(str(lab))}</td><td>{e(str(ent))}</td><td>{n}</td></tr>"
                       for lab, ent, n in sorted(data["top"], key=lambda t: (t[0], -t[2], str(t[1]))))
    parts = [
        "<!doctype html><meta charset='utf-8'><title>ner-tag run report</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}td,th{padding:2px 8px;text-align:left}"
        "pre{background:#f4f4f4;padding:8px;overflow:auto}</style>",
        f"<h1>ner-tag run {e(str(m.get('run_id')))}</h1>",
        f"<p>Started {e(str(m.get('started_at')))}, finished {e(str(m.get('finished_at')))}. "
        f"{sum(data['status'].values())} documents, {sum(data['labels'].values())} entities in the output.</p>",
    ]
    parts += [f"<h2>{e(title)}</h2><img src='{e(name)}' alt='{e(title)}'>" for name, title in charts]
    parts.append(f"<h2>Top {TOP} entities per label</h2><table><tr><th>label</th><th>entity</th><th>count</th></tr>"
                 f"{top_rows}</table>")
    parts.append("<h2>Model</h2><pre>" + e(json.dumps(m.get("model"), indent=2, default=str)) + "</pre>")
    parts.append("<h2>This run</h2><pre>" + e(json.dumps({"counts": m.get("counts"), "throughput": m.get("throughput")},
                                                         indent=2, default=str)) + "</pre>")
    parts.append("<h2>Configuration</h2><pre>" + e(json.dumps(m.get("config"), indent=2, default=str)) + "</pre>")
    return "\n".join(parts)


def write(spark, fs, root: str, tables: dict[str, str], manifest: dict, history: list[dict], by: str | None) -> str:
    """Compute, render into a local temporary folder, and put the report at ``root/_report`` on
    ``fs`` (replacing the previous one); its index page's path."""
    data = collect(spark, tables, manifest, history, by)
    with tempfile.TemporaryDirectory(prefix="ner-report-") as tmp:
        folder = Path(tmp) / REPORT  # made with the umask's mode (the temporary folder's is 0700)
        render(data, folder)
        target = fs.join(root, REPORT)
        if fs.exists(target):
            fs.delete(target)
        fs.put_dir(str(folder), target)
    return fs.join(target, "index.html")
