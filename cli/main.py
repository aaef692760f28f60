"""`translator` command line.

    translator serve [--host H] [--port P] [--models-dir DIR]    serve the model packages over HTTP
    translator data|train|evaluate|export ...                     the training side, delegated to
                                                                  model.data, model.train, model.evaluate, export
    translator import marian DIR --out models/<pair> ...          an OPUS-MT (Marian) checkpoint → a model package,
                                                                  delegated to export.importers
    translator load|tune ...                                      load generator and batching/length tuner,
                                                                  delegated to loadtest.load, tuning.tune

Delegated commands are imported only when they run, so serving never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import sys
from pathlib import Path

# command → module with main(argv); imported at call time only
DELEGATED = {
    "data": "model.data",
    "train": "model.train",
    "average": "model.average",
    "evaluate": "model.evaluate",
    "card": "model.model_card",
    "export": "export.__main__",
    "import": "export.importers.__main__",  # import marian DIR: an OPUS-MT checkpoint → a package
    "load": "loadtest.load",
    "tune": "tuning.tune",
}
STARTUP_FAILED = 3  # uvicorn's exit status when the app refuses to start


def serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from service.app import STARTUP_REFUSALS, create_app, load_translators
    from service.config import Settings

    overrides = {name: value for name, value in
                 (("host", args.host), ("port", args.port), ("models_dir", args.models_dir), ("log_level", args.log_level))
                 if value is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as error:  # field and problem only: an input value may be an API key
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in error.errors())
        print(f"translator serve: invalid settings: {problems}", file=sys.stderr)
        return STARTUP_FAILED
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:  # before anything listens: a broken package or keys file is one clear line, not a traceback
        app = create_app(settings, load_translators(settings), owns_translators=True)
    except STARTUP_REFUSALS as error:
        logging.getLogger("service").error("refusing to start: %s", error)
        return STARTUP_FAILED
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level, lifespan="on",
        # On SIGTERM uvicorn stops accepting, lets in-flight requests finish for this long, then the
        # app's shutdown drains whatever is still queued.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
        timeout_keep_alive=math.ceil(settings.keep_alive_s), access_log=settings.access_log,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else STARTUP_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="translator", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("serve", help="serve the model packages over HTTP (settings: TRANSLATOR_* environment variables)")
    run.add_argument("--host", help="address to listen on (default: TRANSLATOR_HOST, HOST or 127.0.0.1)")
    run.add_argument("--port", type=int, help="port (default: TRANSLATOR_PORT, PORT or 8000)")
    run.add_argument("--models-dir", type=Path, help="directory of model packages (default: TRANSLATOR_MODELS_DIR or models)")
    run.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    run.set_defaults(handler=serve)
    for command, module in DELEGATED.items():  # listed for --help; main() hands their arguments over untouched
        commands.add_parser(command, help=f"delegated to `python -m {module.removesuffix('.__main__')}` (see its --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        return importlib.import_module(DELEGATED[argv[0]]).main(argv[1:]) or 0
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
