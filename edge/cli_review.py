"""`soundwatch summarize` and `soundwatch review`: what a person reads of scan outputs."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge import schema
from edge.cli_common import log_at, model_path
from edge.config import load_config
from edge.errors import ConfigError, SoundwatchError
from edge.schema import Path_

logger = logging.getLogger("soundwatch")


def add_summarize_and_review(sub: Any) -> None:
    summarize = sub.add_parser(
        "summarize", help="detections per hour and day, and coverage, as CSV and PNG"
    )
    summarize.add_argument("folder", help="a `soundwatch scan --out` folder (or its URL)")
    summarize.add_argument("--to", help="where the summary goes (default: <folder>/summary)")
    summarize.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    summarize.set_defaults(func=cmd_summarize)

    review = sub.add_parser("review", help="a web page to judge the detections of scan outputs")
    review.add_argument("folder", help="a `soundwatch scan --out` folder")
    review.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; any other needs SOUNDWATCH_REVIEW_TOKEN)",
    )
    review.add_argument("--port", type=int, default=8088, help="port (default: 8088; 0: any free)")
    review.add_argument("--open", action="store_true", help="open the page in a browser")
    review.add_argument(
        "--model", help="bundle folder or bundled model name that POST /api/infer scores with"
    )
    review.add_argument("--export", metavar="DIR", help="write the verdicts as annotations, exit")
    review.add_argument(
        "--reviewer", help="name stored with each verdict (default: the user running it)"
    )
    review.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    review.set_defaults(func=cmd_review)


def cmd_summarize(args: argparse.Namespace) -> int:
    from edge.remote import is_url

    log_at("debug" if args.verbose else "info")
    if not is_url(args.folder):
        to = Path(args.to or Path(args.folder, "summary"))
        written = _summarize(Path(args.folder), to)
        logger.info("%d file(s) written to %s", written, to)
        return 0
    from edge.remote import local_copy, upload
    from edge.review.scanfolder import EVENTS_SUFFIX, SECONDS_SUFFIX

    # A scan --out in object storage: its outputs read from a local copy; the summary goes to
    # --to, or next to them (<url>/summary/).
    with local_copy(args.folder, (EVENTS_SUFFIX, SECONDS_SUFFIX)) as folder:
        if not any(folder.rglob(f"*{EVENTS_SUFFIX}")):
            raise ConfigError(f"{args.folder}: no scan outputs (*{EVENTS_SUFFIX}) in it")
        to = Path(args.to) if args.to else folder / ".summary"
        written = _summarize(folder, to)
        where = str(to)
        if not args.to:
            where = args.folder.rstrip("/") + "/summary"
            upload(sorted(to.iterdir()), to, where)
    logger.info("%d file(s) written to %s", written, where)
    return 0


def _summarize(folder: Path, to: Path) -> int:
    """The summary of the scan outputs in `folder`, written into `to`: how many files."""
    from edge.review.summary import summarize, write_csvs, write_plots

    summary = summarize(folder)
    try:
        write_csvs(summary, to)
        plotted = write_plots(summary, to)
    except OSError as exc:
        raise SoundwatchError(f"{to}: cannot write the summary ({exc.strerror or exc})") from None
    if not plotted:
        logger.warning("no PNG plots: they need matplotlib (pip install 'soundwatch[plots]')")
    if summary.untimed_files:
        logger.warning(
            "%d file(s) without an absolute time left out (a time in the name, or scan --start)",
            summary.untimed_files,
        )
    return len(summary.written)


def cmd_review(args: argparse.Namespace) -> int:
    import getpass
    import webbrowser

    from edge.review.server import make_server, review_folder, review_token

    log_at("debug" if args.verbose else "info")
    reviewer = args.reviewer
    if not reviewer:
        try:
            reviewer = getpass.getuser()
        except (OSError, KeyError):  # no user name in a bare container
            reviewer = "reviewer"
    review = review_folder(Path(args.folder), review_token(args.host), reviewer)
    if args.model:  # POST /api/infer scores with it; without, that route answers 404
        from edge.review.infer import Scorer

        at: Path_ = ("model", "path")
        loaded = load_config(None)
        model = {at: (model_path(args.model), "--model")}
        loaded = replace(loaded, config=schema.override(loaded.config, model, loaded.where))
        review.scorer = Scorer(lambda: loaded, int(loaded.config.web.max_upload_mb * 2**20))
        review.scorer.load()
    if args.export:
        events, verdicts = review.source.events(), review.store.all()
        from edge.review.export import export

        written = export(events, verdicts, Path(args.export))
        print(f"{len(verdicts)} verdict(s) exported to {len(written)} file(s) in {args.export}")
        return 0
    server = make_server(review, args.host, args.port)
    host, port = str(server.server_address[0]), server.server_address[1]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    logger.info("review of %s at %s (Ctrl-C stops)", args.folder, url)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    if args.open:
        webbrowser.open(url)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        review.store.close()
    return 0
