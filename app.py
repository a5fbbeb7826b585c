"""SBANet app: segment aerial images from text, inspect attention, correct and save masks.

    python app.py                      # http://127.0.0.1:7860, SQLite store in ./sbanet-data
    python app.py --model user/repo --auth ana:secret --port 8080
    python app.py --precision bf16     # or SBANET_PRECISION=bf16; the header shows what runs

Layout and handlers live in ``annotate/``; this file parses the command line and launches.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the app's modules are imported when used, not at import time
    from annotate.app.launch import AppSettings


def parse_args(argv: list[str] | None = None) -> AppSettings:
    from annotate.app.launch import AUTH_ENV, DEFAULT_ADAPT_AFTER, DEFAULT_MAX_FILE_SIZE, AppSettings, parse_auth
    from sbanet.inference.precision import PRECISION_ENV, PRECISIONS, check_precision

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        help="checkpoint folder or hub repo id (default: $SBANET_MODEL, the store's "
        "active model, then the shipped sbanet-lite-landcover)",
    )
    parser.add_argument("--data-dir", help="data folder: database, images, checkpoints (default ./sbanet-data)")
    parser.add_argument("--store-url", help="SQLAlchemy URL of the store (default: SQLite in the data folder)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for a LAN)")
    parser.add_argument("--port", type=int, help="port (default 7860)")
    parser.add_argument(
        "--auth",
        default=os.environ.get(AUTH_ENV),
        help=f"user:password[,...] (or ${AUTH_ENV}); the signed-in name is saved as the annotator",
    )
    parser.add_argument("--share", action="store_true", help="also open a public *.gradio.live link")
    parser.add_argument("--concurrency", type=int, default=1, help="model runs at the same time (default 1)")
    parser.add_argument("--device", help="torch device for the model (default: cuda when available, else cpu)")
    parser.add_argument(
        "--precision",
        default=os.environ.get(PRECISION_ENV, "auto"),
        help=f"{', '.join(PRECISIONS)} (or ${PRECISION_ENV}; default auto: the model's measured "
        "policy, fp16 on CUDA only); the header shows what runs",
    )
    parser.add_argument("--max-file-size", default=DEFAULT_MAX_FILE_SIZE, help="largest upload (default 200mb)")
    parser.add_argument(
        "--adapt-after",
        type=int,
        default=DEFAULT_ADAPT_AFTER,
        help=f"saved corrections before 'Adapt to my corrections' is offered (default {DEFAULT_ADAPT_AFTER})",
    )
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.adapt_after < 1:
        parser.error("--adapt-after must be at least 1")
    try:
        auth = parse_auth(args.auth)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        precision = check_precision(args.precision)
    except ValueError as exc:
        parser.error(f"--precision / ${PRECISION_ENV}: {exc}")
    return AppSettings(
        model=args.model,
        data_dir=args.data_dir,
        store_url=args.store_url,
        host=args.host,
        port=args.port,
        auth=auth,
        share=args.share,
        concurrency=args.concurrency,
        max_file_size=args.max_file_size,
        device=args.device,
        precision=precision,
        adapt_after=args.adapt_after,
    )


def main(argv: list[str] | None = None) -> None:
    from annotate.app.launch import build_app, launch_kwargs

    settings = parse_args(argv)
    # refused user input is logged as one line ("refused segment: ..."), never a traceback
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("annotate").setLevel(logging.INFO)
    try:
        demo, backend = build_app(settings)
    except ValueError as exc:  # no model, an unreadable checkpoint, a bad store URL: say why
        sys.exit(f"app.py: {exc}")
    # SIGTERM (docker stop, systemd) ends the app like Ctrl+C, so the cleanup below runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        demo.launch(**launch_kwargs(settings, backend))
    finally:
        backend.downloads.close()  # the temporary download folder goes with the app


if __name__ == "__main__":
    main()
