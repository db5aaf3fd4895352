"""``emotitrack serve``: run the API with uvicorn (the production server command)."""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


def add_serve_command(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve the Production model over HTTP (FastAPI + uvicorn)",
        description="Serve EMOTITRACK_MODEL_URI (default models:/emotitrack-sentiment@production). "
        "Settings: EMOTITRACK_* variables, see the README.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_serve_options(serve)
    serve.set_defaults(handler=serve_forever)


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    port = int(os.environ.get("PORT", "8000"))
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=port, help="port (default from $PORT)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--log-level", default="info", help="uvicorn log level")


def serve_forever(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from emotitrack.core.options import report_invalid_settings
    from serving.settings import ServingSettings

    try:  # here, not only in each worker: one line and exit 2 instead of a traceback per worker
        ServingSettings()
    except ValidationError as exc:
        return report_invalid_settings(exc, from_environment=True)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler it found:
    # make that handler exit 0, so orchestrators see a clean stop after the log was flushed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    if args.workers == 1:
        # Start-up builds many modules and a model: collecting garbage meanwhile only walks
        # them again. The app turns the collector back on once it has started (its lifespan). Not with several workers: this process
        # is then only their supervisor, and runs no lifespan.
        gc.disable()
    # Fail over fast when the registry is down instead of MLflow's minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    with metrics_folder(args.workers):
        uvicorn.run(
            "serving.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            timeout_graceful_shutdown=30,
            access_log=False,  # texts never go to logs; Prometheus counts requests
        )
    return 0


@contextmanager
def metrics_folder(workers: int) -> Iterator[None]:
    """``PROMETHEUS_MULTIPROC_DIR`` emptied of an earlier run's files; with several workers and
    none given, a private one for this run (else each scrape would see one worker's counts).
    Set before uvicorn starts the workers, so they inherit it."""
    from serving.metrics import clear_multiprocess_dir

    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        clear_multiprocess_dir(Path(given))
        yield
        return
    if workers == 1:
        yield
        return
    folder = tempfile.mkdtemp(prefix="emotitrack-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    try:
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_serve_options(parser)
    return serve_forever(parser.parse_args(argv))
