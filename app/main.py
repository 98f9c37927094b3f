"""create_app(): lifespan (engine, sessionmaker, http clients), middleware, routers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from app.config import Settings, get_settings
from app.contributions.evidence import media
from app.core.errors import install_error_handlers
from app.core.http_policy import AllowedHostsMiddleware, SecurityHeadersMiddleware
from app.core.limits import InputLimitsMiddleware
from app.core.logging import configure_logging
from app.core.middleware import ETagMiddleware, RequestContextMiddleware
from app.core.openapi import install_openapi
from app.core.setup import install
from app.db.session import create_engine, create_sessionmaker
from app.integrations.storage import storage_for
from app.integrations.wechat.client import WechatClient
from app.ops.router import router as ops_router
from app.routers import api_router

API_PREFIX = "/api/v1"


def _operation_id(route: APIRoute) -> str:
    return route.name


def create_app(settings: Settings | None = None, *, configure_logs: bool = True) -> FastAPI:
    settings = settings or get_settings()
    install(settings)
    if configure_logs:
        configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.storage = storage_for(settings)
        wechat_http = WechatClient.new_http_client(settings)
        app.state.wechat = WechatClient(wechat_http, settings, app.state.sessionmaker)
        worker = None
        if settings.wechat_worker_in_app:
            from app.wechat.worker import start_in_background

            worker = start_in_background(app.state.wechat, app.state.sessionmaker, settings)
        try:
            yield
        finally:
            if worker is not None:
                await worker.stop()
            await wechat_http.aclose()
            await app.state.storage.aclose()
            await engine.dispose()

    app = FastAPI(
        title="quyu API",
        version="1.0.0",
        summary="Regional party building (区域性党建): check-ins, activities, dual-post work",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        # Off in production unless QUYU_API_DOCS turns them on.
        openapi_url="/openapi.json" if settings.docs_served else None,
        docs_url="/docs" if settings.docs_served else None,
        redoc_url="/redoc" if settings.docs_served else None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(api_router, prefix=API_PREFIX)
    app.include_router(ops_router)
    # Added innermost first.  Outermost: the security headers, on every answer; then the
    # context (id, logs, metrics, last-resort 500); then the host allow-list, before any work;
    # then the input limits, so that nothing reads a body before it is bounded; then ETag.
    app.add_middleware(ETagMiddleware)
    app.add_middleware(
        InputLimitsMiddleware,
        body_limit=settings.max_body_bytes,
        # An upload: the evidence file and its multipart envelope.
        upload_limit=media.MAX_BYTES + media.ENVELOPE_SLACK,
        upload_paths=re.compile(re.escape(API_PREFIX) + media.UPLOAD_PATH),
        upload_code="attachment_too_large",
    )
    app.add_middleware(AllowedHostsMiddleware, hosts=settings.hosts)
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    install_openapi(app)
    return app
