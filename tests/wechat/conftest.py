"""The WeChat stand-in (`app.integrations.wechat.fake`) as a real HTTP server on 127.0.0.1,
and the app's WeChat client pointed at it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from app.config import Settings, WechatTemplate, get_settings
from app.integrations.wechat.client import WechatClient
from app.integrations.wechat.fake import FakeWechatState, create_fake_app
from app.wechat import notifications as n

APP_ID = "wx-quyu-test"
APP_SECRET = "test-app-secret"

TEMPLATES = {
    n.CHECKIN_DECISION: WechatTemplate(template_id="tpl-checkin"),
    n.CONTRIBUTION_DECISION: WechatTemplate(template_id="tpl-contribution"),
    n.WAITLIST_PROMOTED: WechatTemplate(template_id="tpl-promoted"),
    n.ACTIVITY_CANCELLED: WechatTemplate(template_id="tpl-cancelled"),
    n.ACTIVITY_REMINDER: WechatTemplate(template_id="tpl-reminder"),
}


@dataclass
class FakeWechat:
    state: FakeWechatState
    url: str

    def sent(self, template_id: str | None = None) -> list[dict[str, Any]]:
        with self.state.lock:
            return [
                m
                for m in self.state.messages
                if template_id is None or m["template_id"] == template_id
            ]

    def calls(self, path: str) -> int:
        with self.state.lock:
            return self.state.calls.get(path, 0)


@pytest.fixture(scope="session")
def _fake_server() -> Iterator[FakeWechat]:
    state = FakeWechatState(app_id=APP_ID, secret=APP_SECRET)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_fake_app(state),
        log_level="warning",
        lifespan="off",
        ws="none",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("fake WeChat did not start")
        time.sleep(0.01)
    yield FakeWechat(state=state, url=f"http://127.0.0.1:{port}")
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture
def fake(_fake_server: FakeWechat) -> FakeWechat:
    _fake_server.state.reset()
    return _fake_server


@pytest.fixture
def wx_settings(fake: FakeWechat) -> Settings:
    from pydantic import SecretStr

    return get_settings().model_copy(
        update={
            "wechat_api_base": fake.url,
            "wechat_app_id": APP_ID,
            "wechat_app_secret": SecretStr(APP_SECRET),
            "wechat_retries": 2,
            "wechat_retry_backoff_seconds": 0.01,
            "wechat_timeout_seconds": 5.0,
            "wechat_templates": dict(TEMPLATES),
            "wechat_send_max_attempts": 3,
        }
    )


@pytest.fixture
async def wechat(app: FastAPI, wx_settings: Settings) -> AsyncIterator[WechatClient]:
    """The app's WeChat client, configured for the stand-in for this test."""
    http = WechatClient.new_http_client(wx_settings)
    client = WechatClient(http, wx_settings, app.state.sessionmaker)
    previous = app.state.wechat
    app.state.wechat = client
    try:
        yield client
    finally:
        app.state.wechat = previous
        await http.aclose()
