"""The aiohttp application of the HTTP API, and running it beside the bot or alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from bot.admission import Admission
from bot.engine import Engine
from bot.http.admin import admin_routes
from bot.http.console.pages import CONSOLE_PATHS, STATIC, pages, security_headers
from bot.http.console.sessions import SESSIONS, Sessions
from bot.http.operations import ops_routes, sampling
from bot.http.problems import problems_middleware
from bot.http.routes import API, key_of, routes
from bot.http.service import HttpApi
from bot.lifecycle import stop_requested
from bot.metrics import Metrics
from bot.policy import Policy
from bot.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")

DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>comfycord API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>
fetch("/openapi.json").then(r => r.json()).then(spec => {
  // the bundled Swagger UI predates OpenAPI 3.1: show the document under the 3.0 label it knows
  spec.openapi = "3.0.3";
  SwaggerUIBundle({spec: spec, dom_id: "#ui", persistAuthorization: true});
});
</script></body></html>
"""


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    api = request.app[API]
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        api.metrics.http_requests.labels(route, request.method, str(status)).inc()


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/v1/"):
        key_of(request)  # 401 before anything else
    return await handler(request)


async def docs(request: web.Request) -> web.StreamResponse:
    return web.Response(text=DOCS_PAGE, content_type="text/html")


def build_app(api: HttpApi) -> web.Application:
    """The API as an aiohttp application (its lifetime is the caller's)."""
    app = web.Application(
        middlewares=[metrics_middleware, problems_middleware, auth_middleware],
        client_max_size=api.settings.http.max_body_bytes,
    )
    app[API] = api
    app[SESSIONS] = Sessions(api.keys)
    app.add_routes(admin_routes)
    app.add_routes(ops_routes)
    app.add_routes(routes)
    app.router.add_get("/docs", docs)
    app.router.add_static("/docs/static", swagger_ui_path)
    # the web console: its pages, and their script and style
    app.add_routes(pages)
    app.router.add_static(CONSOLE_PATHS["static"], STATIC)
    app.on_response_prepare.append(security_headers)
    app.cleanup_ctx.append(sampling)
    return app


@contextlib.asynccontextmanager
async def serving(
    engine: Engine, admission: Admission, settings: Settings, metrics: Metrics
) -> AsyncIterator[HttpApi]:
    """Serve the API on `http.host:http.port` while the block runs."""
    api = HttpApi(engine, admission, settings, metrics)
    # open event streams get this long to end on shutdown, then they are cut
    runner = web.AppRunner(build_app(api), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.http.host, settings.http.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        api.address = f"http://{host}:{port}"
        log.info("HTTP API on %s", api.address)
        api.start()
        yield api
    finally:
        await runner.cleanup()
        await api.close()


async def serve(
    settings: Settings,
    *,
    ready: Callable[[HttpApi], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """`comfycord serve`: the engine and the HTTP API, without Discord, until stopped.

    `ready` is called once it listens; SIGINT/SIGTERM (or setting `stop`) ends it: the API
    stops taking requests, open event streams are given 2 s, queued and running jobs stay in
    the store for the next start.
    """
    async with aiohttp.ClientSession() as session:
        engine = Engine(session, settings, role="api", detail="HTTP API")
        admission = Admission(engine, Policy(engine.store, settings, lambda: engine.workflows))
        metrics = Metrics(engine)
        try:
            with stop_requested() as signalled:
                await engine.start()
                async with serving(engine, admission, settings, metrics) as api:
                    if ready is not None:
                        ready(api)
                    waits = [asyncio.ensure_future(signalled.wait())]
                    if stop is not None:
                        waits.append(asyncio.ensure_future(stop.wait()))
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    for wait in waits:
                        wait.cancel()
                log.info("stopped")
        finally:
            await engine.stop()
            metrics.close()
            engine.close_store()
    return 0
