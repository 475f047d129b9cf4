"""Local mode's command line (`make local` runs `serve`).

    python -m local serve [--documents DIR] [--stage NAME]   # index, then serve on 127.0.0.1:$PORT
    python -m local index [--documents DIR] [--stage NAME]   # bring the index up to date and exit
    python -m local status [GENERATOR] [--smoke]              # generators and why one is unavailable

Environment: PORT (default 8787), LOCAL_DOCUMENTS (default model_artifacts/sample_documents),
LOCAL_CACHE_DIR (default .local-cache), LOCAL_EMBED_THREADS (default 1).
Exit status: 0 on success, 1 when something is missing or broken (one line says what), 2 on bad
arguments.
"""

from __future__ import annotations

import argparse
import os
import sys

# The handler logs every request at info level (JSON on stdout); the server prints its own access
# line, so only the handler's warnings and errors are shown.
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

from . import app  # noqa: E402  (after the environment above)


def _port() -> int:
    raw = os.environ.get("PORT", str(app.DEFAULT_PORT))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise app.LocalConfigError(f"PORT={raw!r}: a port number 1..65535")
    return int(raw)


def _progress(message: str) -> None:
    print(message, file=sys.stderr)  # stderr is line-buffered (Python 3.9+): each line leaves at once


def _statuses(mode: app.LocalMode) -> list[str]:
    lines = []
    for name, generator in mode.backend.generators.items():
        status = generator.status()
        lines.append(f"  {name}: " + (f"available ({status.model})" if status.available else f"not available: {status.reason}"))
    return lines


def serve(args) -> int:
    from .server import LocalServer  # imports the query handler (Powertools) only when serving

    port = _port()
    mode = app.LocalMode(app.env_config(args.stage, args.documents))
    _progress(f"indexing {mode.config.documents} (cache: {mode.config.cache_dir})")
    report = mode.sync(_progress)
    _progress(report.summary())
    mode.embedder.load()  # an unchanged index embedded nothing: load the model before the first question
    try:
        server = LocalServer(mode, port)
    except OSError as error:
        raise app.LocalConfigError(f"cannot listen on 127.0.0.1:{port} ({error.strerror}); set PORT to a free port") from None
    _progress("generators (first available answers by default):")
    for line in _statuses(mode):
        _progress(line)
    _progress(
        f"serving {server.url}/v1/query and {server.url}/v1/health (Ctrl-C stops)\n"
        f'try: .venv/bin/python scripts/ask.py --url {server.url} "How long are deleted documents kept?"'
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        _progress("stopped")
    finally:
        server.close()
    return 0


def index(args) -> int:
    mode = app.LocalMode(app.env_config(args.stage, args.documents))
    report = mode.sync(_progress)
    _progress(report.summary())
    return 1 if report.failed else 0


def status(args) -> int:
    mode = app.LocalMode(app.env_config(args.stage, args.documents))
    for line in _statuses(mode):
        print(line)
    if not args.generator:
        return 0
    generator = mode.backend.generators.get(args.generator)
    if generator is None:
        print(f"unknown generator {args.generator!r}; local mode knows {', '.join(mode.backend.generators)}", file=sys.stderr)
        return 2
    if not generator.status().available:
        return 1
    if args.smoke:  # proves the model loads and generates (a bad llama.cpp build crashes right here)
        from query import prompts

        question = "Say hello."
        generation = generator.generate(prompts.baseline_prompt(question), question=question, passages=[], max_tokens=8, temperature=0.0)
        print(f"  {args.generator} answered: {generation.text!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="index the documents, then serve the API")
    indexing = commands.add_parser("index", help="bring the index up to date")
    checking = commands.add_parser("status", help="show the generators")
    for command in (serving, indexing, checking):
        command.add_argument("--documents", help="folder of documents (default: LOCAL_DOCUMENTS or the sample corpus)")
        command.add_argument("--stage", help="use this stage's config from cdk.json instead of the defaults")
    checking.add_argument("generator", nargs="?", help="exit 1 unless this generator is available")
    checking.add_argument("--smoke", action="store_true", help="also generate a few tokens with it")
    args = parser.parse_args(argv)
    try:
        return {"serve": serve, "index": index, "status": status}[args.command](args)
    except app.LocalConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
