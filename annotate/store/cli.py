"""``python -m annotate.store.cli``: import datasets into the store, export it, inspect and migrate it.

Examples::

    python -m annotate.store.cli import rrsisd /data/RRSIS-D --splits train val
    python -m annotate.store.cli export rrsisd exports/rrsisd-accepted
    python -m annotate.store.cli export coco exports/all --selection latest
    python -m annotate.store.cli stats
    python -m annotate.store.cli db upgrade

The store is ``--store URL`` (else ``$SBANET_STORE_URL``, else the SQLite file in the data
folder), its files in ``--data-dir`` (else ``$SBANET_DATA_DIR``, else ``./sbanet-data``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sqlalchemy import func, select

from .database import make_store, schema_revision, upgrade_to_head
from .export import FORMATS, export_store
from .models import Expression, FineTuneRun, Image, MaskVersion, ModelVersion
from .transfer import SELECTIONS, import_dataset


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m annotate.store.cli", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="SQLAlchemy URL of the store (default: SQLite in the data folder)")
    parser.add_argument("--data-dir", help="the data folder (images, checkpoints; default ./sbanet-data)")
    commands = parser.add_subparsers(dest="command", required=True)

    imp = commands.add_parser("import", help="import a dataset; its masks become accepted corrections")
    imp.add_argument("kind", help="dataset kind: rrsisd, refsegrs, folder (see sbanet.data.DATASETS)")
    imp.add_argument("root", help="the dataset's root folder")
    imp.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    imp.add_argument("--author", default="import")

    exp = commands.add_parser("export", help="export masks as a dataset or interchange files")
    exp.add_argument("format", choices=FORMATS)
    exp.add_argument("out", help="a new (or empty) output folder")
    exp.add_argument("--selection", choices=SELECTIONS, default="accepted")
    exp.add_argument("--splits", nargs="+", default=None)

    commands.add_parser("stats", help="count what the store holds")
    db = commands.add_parser("db", help="schema migrations")
    db.add_argument("action", choices=["upgrade", "current"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "db":
        store = make_store(args.store, args.data_dir, upgrade=False)
        if args.action == "upgrade":
            upgrade_to_head(store.engine)
        current, heads = schema_revision(store.engine)
        state = "up to date" if current == heads else f"behind (head {sorted(heads)})"
        print(f"{store.url}: revision {sorted(current) or 'none'}, {state}")
        return 0
    store = make_store(args.store, args.data_dir)
    if args.command == "import":
        report = import_dataset(store, args.kind, args.root, args.splits, author=args.author)
        print(
            f"imported {report.added} expressions on {report.images} images "
            f"({', '.join(f'{k}: {v}' for k, v in sorted(report.per_split.items())) or 'none new'}); "
            f"{report.skipped} already present"
        )
        if report.invalid:
            shown = "\n  ".join(report.invalid[:10]) + ("\n  ..." if len(report.invalid) > 10 else "")
            print(f"left out {len(report.invalid)} invalid samples:\n  {shown}", file=sys.stderr)
    elif args.command == "export":
        summary = export_store(store, args.out, args.format, selection=args.selection, splits=args.splits)
        skipped = f", skipped {summary.skipped} without georeferencing" if summary.skipped else ""
        print(f"exported {summary.exported} {args.selection} masks as {summary.format} to {summary.out}{skipped}")
    else:
        with store.ReadSession() as session:
            for model in (Image, Expression, MaskVersion, ModelVersion, FineTuneRun):
                print(f"{model.__tablename__:>15}: {session.scalar(select(func.count()).select_from(model))}")
            by_status = session.execute(select(MaskVersion.status, func.count()).group_by(MaskVersion.status)).all()
            print("    mask status: " + ", ".join(f"{s} {n}" for s, n in sorted(by_status)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
