"""Command line: arguments -> config -> :func:`ner_udf.job.run` -> exit code and one line; plus
``ner-tag runs OUTPUT`` (the run history) and ``ner-tag init-config NAME`` (a shipped example).

Used by ``jobs/tag_entities.py`` under spark-submit and by the ``ner-tag`` console script (which
starts a local SparkSession in-process). Exit codes: 0 output committed, 2 user error (one line on
stderr, nothing written), 1 the run failed (nothing committed; the previous output is left whole).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import sysconfig
from pathlib import Path

from . import __version__
from .config import STRATEGIES, Config, load_config
from .errors import UserError, failure_reason, one_line


def _last_word() -> None:
    """Make the one line printed next the last thing shown: stop Spark and mute it (see
    :func:`ner_udf.spark.quiet`). Failing to do so must not hide the line itself."""
    if "pyspark" in sys.modules:
        from .spark import quiet

        try:
            quiet()
        except Exception:  # noqa: BLE001 - e.g. the JVM is already gone
            pass

FLAGS = {  # flag -> dotted config key
    "input": "input.path",
    "output": "output.path",
    "model": "model.name",
    "revision": "model.revision",
    "id_col": "input.id_col",
    "text_col": "input.text_col",
    "aggregation": "tagging.aggregation",
    "max_length": "tagging.max_length",
    "stride": "tagging.stride",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other user error
        print(f"ner-tag: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _defaults(argv: list[str]) -> tuple[dict, str]:
    """The values --help shows as defaults: those of the --config file among ``argv`` when it can
    be read, else the built-in ones."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    try:
        cfg, source = load_config(known.config), (f"from {known.config}" if known.config else "built in")
    except UserError:
        cfg, source = load_config(), "built in"
    tree = cfg.to_dict()
    values = {}
    for flag, key in FLAGS.items():
        section, name = key.split(".")
        values[flag] = tree[section][name]
    return values, source


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else argv
    now, source = _defaults(argv)

    def dflt(flag: str) -> str:
        return f" (now: {'null' if now[flag] is None else now[flag]})"

    p = _Parser(prog="ner-tag", description="Tag named entities in a Parquet corpus with a Hugging Face model. "
                "Also: `ner-tag runs OUTPUT` (an output's run history), `ner-tag init-config NAME` (a shipped "
                f"config to start from). Values shown as 'now' are {source}.")
    p.add_argument("--version", action="version", version=f"ner-tag {__version__}")
    p.add_argument("--config", help="YAML config (see conf/); every key can be overridden below")
    p.add_argument("--input", help="Parquet file or directory (Hive partitions are read as columns)" + dflt("input"))
    p.add_argument("--output", help="directory that receives entities/, documents/ and manifest.json" + dflt("output"))
    p.add_argument("--model", help="hub id or local directory of a token-classification model" + dflt("model"))
    p.add_argument("--revision", help="hub revision (branch, tag or commit)" + dflt("revision"))
    p.add_argument("--id-col", dest="id_col", help="document id column" + dflt("id_col"))
    p.add_argument("--text-col", dest="text_col", help="text column" + dflt("text_col"))
    p.add_argument("--aggregation", choices=STRATEGIES, help="entity aggregation strategy" + dflt("aggregation"))
    p.add_argument("--max-length", dest="max_length", type=int,
                   help="window size in tokens, special tokens included (null: the tokenizer's)" + dflt("max_length"))
    p.add_argument("--stride", type=int, help="tokens shared by consecutive windows (null: a quarter of the window)"
                   + dflt("stride"))
    p.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="check the config, the model, the input and the output, print what a run would do (JSON) "
                   "and stop: nothing is tagged or written")
    p.add_argument("--quiet", action="store_true", help="no progress line (by default one every 10 s on stderr)")
    p.add_argument("--verbose", action="store_true", help="Spark's own log at INFO (by default WARN)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set model.precision=bf16 (repeatable)")
    p.add_argument("--conf", dest="confs", action="append", default=[], metavar="KEY=VALUE",
                   help="a Spark setting, e.g. --conf spark.executor.memory=4g (repeatable; spark.conf in the "
                   "config; under spark-submit its own --conf wins)")
    return p.parse_args(argv)


def spark_confs(items: list[str]) -> dict[str, str]:
    """The ``--conf KEY=VALUE`` settings of any command, in order (a later one wins)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--conf: got {item!r}; expected KEY=VALUE, e.g. spark.executor.memory=4g")
        out[key.strip()] = value
    return out


def build_config(args: argparse.Namespace) -> Config:
    overrides = {key: getattr(args, flag) for flag, key in FLAGS.items()}
    return load_config(args.config, overrides=overrides, sets=args.sets, spark_conf=spark_confs(args.confs))


def format_run(m: dict) -> str:
    """One line of ``ner-tag runs``."""
    c = m.get("counts", {})
    inp = c.get("input", {})
    errors = c.get("documents", {}).get("error", 0)
    status = "committed" + (f", {errors} documents with status=error" if errors else "")
    return (f"{m.get('started_at', '?')[:19]}Z  {m.get('run_id', '?')}  {m.get('output', {}).get('mode', '?'):<11}  "
            f"tagged {inp.get('tagged', '?')}  skipped {inp.get('skipped', '?')}  retried {inp.get('retried', '?')}  "
            f"entities {c.get('entities', {}).get('total', '?')}  "
            f"{m.get('throughput', {}).get('tokens_per_s', '?')} tokens/s  {status}")


def runs_main(argv: list[str]) -> int:
    """``ner-tag runs OUTPUT``: one line per committed run, oldest first."""
    from .store import run_history

    p = _Parser(prog="ner-tag runs", description="List the runs committed to an output, oldest first: start "
                "time, run id, mode, documents tagged/skipped/retried, entities, tokens/s, status.")
    p.add_argument("output", help="the job's --output path")
    args = p.parse_args(argv)
    try:
        history = run_history(args.output)
    except UserError as exc:
        print(f"ner-tag: error: {exc}", file=sys.stderr)
        return 2
    for m in history:
        print(format_run(m))
    return 0


def report_main(argv: list[str]) -> int:
    """``ner-tag report OUTPUT``: (re)write ``OUTPUT/_report/`` for the committed output."""
    p = _Parser(prog="ner-tag report", description="Write OUTPUT/_report/index.html and its charts for the run "
                "committed to OUTPUT (every committed run writes one; this regenerates it), on a local Spark session.")
    p.add_argument("output", help="the job's --output path")
    p.add_argument("--by", help="a pass-through column to break entities down by (default: the run's report.by, "
                   "else its first pass-through column)")
    p.add_argument("--conf", dest="confs", action="append", default=[], metavar="KEY=VALUE", help="a Spark setting")
    args = p.parse_args(argv)
    from . import job

    try:
        path = job.report_only(args.output, args.by, spark_confs(args.confs))
    except UserError as exc:
        _last_word()
        print(f"ner-tag: error: {exc}", file=sys.stderr, flush=True)
        return 2
    if path is None:
        return 1
    print(f"ner-tag: report: {path}")
    return 0


EXAMPLES = {"local": "local.yaml", "cluster-cpu": "cluster-cpu.yaml", "cluster-gpu": "cluster-gpu.yaml",
            "gpu-discovery": "get_gpus_resources.sh"}


def example_file(name: str) -> Path:
    """A shipped example: the configs (``conf/`` beside the package in a clone, else installed under
    ``<prefix>/share/ner-udf/conf``) and the GPU discovery script (package data)."""
    if name == "gpu-discovery":
        return Path(__file__).resolve().parent / "resources" / EXAMPLES[name]
    clone = Path(__file__).resolve().parents[1]  # a source checkout (editable install): its conf/ is current
    folders = [clone / "conf"] if (clone / "pyproject.toml").is_file() else []
    for folder in (*folders, Path(sysconfig.get_path("data")) / "share" / "ner-udf" / "conf"):
        if (folder / EXAMPLES[name]).is_file():
            return folder / EXAMPLES[name]
    raise UserError(f"{EXAMPLES[name]}: not found in this installation")


def init_config_main(argv: list[str]) -> int:
    """``ner-tag init-config NAME [DEST]``: copy a shipped example to start from."""
    p = _Parser(prog="ner-tag init-config", description="Write one of the shipped examples to DEST (default: its "
                "file name in the current directory): the configs local, cluster-cpu, cluster-gpu, or gpu-discovery, "
                "Spark's GPU discovery script (README \"Deploying\").")
    p.add_argument("name", choices=list(EXAMPLES))
    p.add_argument("dest", nargs="?", help="where to write it; an existing file is never replaced")
    args = p.parse_args(argv)
    dest = Path(args.dest or EXAMPLES[args.name])
    try:
        src = example_file(args.name)
        with open(dest, "xb") as out:
            out.write(src.read_bytes())
    except FileExistsError:
        print(f"ner-tag: error: {dest} exists; not replaced", file=sys.stderr)
        return 2
    except (UserError, OSError) as exc:
        print(f"ner-tag: error: {one_line(exc)}", file=sys.stderr)
        return 2
    if src.suffix == ".sh":
        dest.chmod(0o755)
    print(f"ner-tag: wrote {dest} (from {src})")
    return 0


def main(argv: list[str] | None = None) -> int:
    from . import job

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["runs"]:
        return runs_main(argv[1:])
    if argv[:1] == ["init-config"]:
        return init_config_main(argv[1:])
    if argv[:1] == ["report"]:
        return report_main(argv[1:])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    try:
        cfg = build_config(args)
        manifest = job.run(cfg, progress_every_s=None if args.quiet else 10.0, verbose=args.verbose,
                           dry_run=args.dry_run)
    except UserError as exc:
        _last_word()
        print(f"ner-tag: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        _last_word()
        print("ner-tag: interrupted; nothing was committed", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - a failed run: short reason, nothing committed
        _last_word()
        print(f"ner-tag: run failed, nothing committed: {failure_reason(exc)}", file=sys.stderr, flush=True)
        if os.environ.get("NER_TAG_DEBUG"):
            raise
        return 1
    if args.dry_run:
        print(json.dumps(manifest, indent=2, default=str))
        print("ner-tag: dry run: checks passed, nothing tagged or written", file=sys.stderr)
        return 0
    c = manifest.counts
    skipped = f" ({c['input']['skipped']} already tagged, skipped)" if c["input"]["skipped"] else ""
    print(
        f"ner-tag: committed {c['documents']['total']} documents{skipped}, {c['entities']['total']} entities to "
        f"{cfg.output.path} in {manifest.throughput['seconds']} s (model load {manifest.throughput['model_load_s']} s, "
        f"tagging {manifest.throughput['tokens_per_s']} tokens/s); manifest: {cfg.output.path}/manifest.json"
    )
    return 0
