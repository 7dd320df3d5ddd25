"""Run the app on uvicorn: load the bundles, bind, serve until SIGTERM or Ctrl-C, then drain.

On SIGTERM the server stops listening (new connections are refused) and answers 503 to any new
request on an open connection; requests already in flight finish (up to `shutdown_grace_s`), then the
batchers finish what they hold and stop.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hfexport.serve.app import create_app
from hfexport.serve.config import ServeConfig
from hfexport.serve.metrics import Metrics
from hfexport.serve.models import Models, load_models


def make_server(models: Models, config: ServeConfig, *, metrics: Metrics | None = None, log_level: str = "warning",
                on_ready: Callable[[str], None] | None = None):
    """A uvicorn Server over the models, not yet running (`.run()` blocks; `.should_exit = True` stops it)."""
    import uvicorn

    app = create_app(models, config, metrics)
    state = app.state.server

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            state.draining = True  # before uvicorn stops: requests arriving from now on get a 503
            super().handle_exit(sig, frame)

        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started and on_ready is not None:
                host, port = self.servers[0].sockets[0].getsockname()[:2]
                on_ready(f"http://{f'[{host}]' if ':' in host else host}:{port}")

    return Server(uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level, access_log=False,
                                 lifespan="on", timeout_graceful_shutdown=config.shutdown_grace_s,
                                 server_header=False))


def serve(bundles: list[str | Path], config: ServeConfig, *, names: list[str] | None = None,
          log_level: str = "warning", on_ready: Callable[[str], None] | None = None) -> None:
    """Load the bundles and serve them until the process is told to stop."""
    metrics = Metrics()
    models = load_models(bundles, names, config, metrics)
    try:
        make_server(models, config, metrics=metrics, log_level=log_level, on_ready=on_ready).run()
    finally:
        models.close()  # when startup failed (port taken), the lifespan never closed them
