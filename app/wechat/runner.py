"""`quyu worker`: the notifications worker as a process of its own.

It makes its own engine and HTTP client (the API process's are not there), runs one pass or
passes until SIGINT/SIGTERM, and closes both on the way out.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from app.config import Settings
from app.core.logging import configure_logging
from app.db.session import create_engine, create_sessionmaker
from app.integrations.wechat.client import WechatClient
from app.wechat.worker import NotificationWorker

logger = logging.getLogger("quyu.wechat.worker")


async def run_worker(settings: Settings, *, once: bool = False) -> None:
    """Run the worker with `settings`: one pass with `once`, otherwise until stopped."""
    configure_logging(settings.log_level)
    engine = create_engine(settings)
    http = WechatClient.new_http_client(settings)
    try:
        sessionmaker = create_sessionmaker(engine)
        client = WechatClient(http, settings, sessionmaker)
        worker = NotificationWorker(client=client, sessionmaker=sessionmaker, settings=settings)
        if once:
            stats = await worker.run_once()
            logger.info("notifications pass done", extra={"stats": stats.__dict__})
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await worker.run_forever(stop)
    finally:
        await http.aclose()
        await engine.dispose()
