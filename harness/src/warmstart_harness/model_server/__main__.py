"""``serve``: the container's entrypoint (``python3 -m warmstart_harness.model_server``)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

from warmstart_harness.model_server.app import ModelApp, make_server
from warmstart_harness.model_server.config import ConfigError, ServerConfig
from warmstart_harness.model_server.embed import Embedder, OnnxEmbedder


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] != "serve":  # SageMaker runs the image as `<entrypoint> serve`
        print(f"usage: serve (unknown argument {args[0]!r})", file=sys.stderr)
        return 2
    try:
        config = ServerConfig.from_env()
    except ConfigError as e:
        print(f"serve: {e}", file=sys.stderr)
        return 2

    def load_embedder() -> Embedder:
        return OnnxEmbedder.load(config.model_dir)

    app = ModelApp(config, load_embedder)
    server = make_server(app)
    logging.getLogger("warmstart_harness.model_server").info(
        "listening on %s:%d (model dir %s, bench mode %s, max concurrency %d)",
        config.host,
        config.port,
        config.model_dir,
        config.bench_mode,
        config.max_concurrency,
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=app.load, name="load", daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
