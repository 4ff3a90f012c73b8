"""A fake Telegram Bot API on 127.0.0.1: the methods keel's bot calls, recording what it was sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

TOKEN = "123456:SECRET-token-never-shown"
ALLOWED = 1001
FOREIGN = 6666


class FakeBotApi:
    """The Bot API methods the bot calls, on 127.0.0.1; ``send_mode`` is ok, 429 (once) or hang.

    ``rate_limits`` is how many of the next sendMessage calls get a 429 (retry after 7 seconds);
    ``rate_limited_chats`` maps a chat to how many of its next sendMessage calls get that 429;
    ``failing_chats`` maps a chat to how many of its next sendMessage calls fail with a 502 Bad Gateway;
    ``blocked_chats`` answer sendMessage 403 Forbidden (the bot was blocked), ``missing_chats``
    400 chat not found, each refusal recorded in ``refused``;
    ``poll_rate_limits`` is how many of the next getUpdates calls get a 429 (retry after 7 seconds).
    """

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.answered: list[str] = []
        self.updates: list[dict[str, Any]] = []
        self.send_mode = "ok"
        self.poll_hangs = False
        self.rate_limits = 0
        self.rate_limited_chats: dict[int, int] = {}
        self.failing_chats: dict[int, int] = {}
        self.blocked_chats: set[int] = set()
        self.missing_chats: set[int] = set()
        self.refused: list[int] = []
        self.poll_rate_limits = 0
        self.paths: list[str] = []
        self.release = asyncio.Event()
        self.received = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        token, method = request.match_info["token"], request.match_info["method"]
        if token != TOKEN:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        form = dict(await request.post()) if request.can_read_body else {}
        if not form and request.can_read_body:
            form = await request.json()
        return await getattr(self, method)(form)

    async def getMe(self, form: dict[str, Any]) -> web.Response:
        return ok({"id": 1, "is_bot": True, "first_name": "keel", "username": "keel_bot"})

    async def sendMessage(self, form: dict[str, Any]) -> web.Response:
        if self.send_mode == "429":
            self.send_mode = "ok"
            self.rate_limits += 1
        if self.rate_limits > 0:
            self.rate_limits -= 1
            return too_many_requests()
        if self.send_mode == "hang":
            await self.release.wait()
            return web.json_response({"ok": False, "error_code": 503, "description": "gone"}, status=503)
        chat = int(form["chat_id"])
        if self.rate_limited_chats.get(chat, 0) > 0:
            self.rate_limited_chats[chat] -= 1
            return too_many_requests()
        if chat in self.blocked_chats or chat in self.missing_chats:
            self.refused.append(chat)
            return refusal(chat in self.blocked_chats)
        if self.failing_chats.get(chat, 0) > 0:
            self.failing_chats[chat] -= 1
            return web.json_response({"ok": False, "error_code": 502, "description": "Bad Gateway"}, status=502)
        self.sent.append({"chat": chat, "text": form["text"], "markup": form.get("reply_markup")})
        self.received.set()
        return ok(
            {"message_id": len(self.sent), "date": 0, "chat": {"id": chat, "type": "private"}, "text": form["text"]}
        )

    async def getUpdates(self, form: dict[str, Any]) -> web.Response:
        if self.poll_rate_limits > 0:
            self.poll_rate_limits -= 1
            return too_many_requests()
        if self.poll_hangs:
            await self.release.wait()
            return ok([])
        offset = int(form.get("offset") or 0)
        pending = [u for u in self.updates if u["update_id"] >= offset]
        return ok(pending)

    async def answerCallbackQuery(self, form: dict[str, Any]) -> web.Response:
        self.answered.append(form["callback_query_id"])
        return ok(True)


def ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def refusal(blocked: bool) -> web.Response:
    code, description = (
        (403, "Forbidden: bot was blocked by the user") if blocked else (400, "Bad Request: chat not found")
    )
    return web.json_response({"ok": False, "error_code": code, "description": description}, status=code)


def too_many_requests() -> web.Response:
    body = {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 7",
            "parameters": {"retry_after": 7}}  # fmt: skip
    return web.json_response(body, status=429)


@asynccontextmanager
async def fake_api() -> AsyncIterator[tuple[FakeBotApi, str]]:
    api = FakeBotApi()
    app = web.Application()
    app.router.add_post("/bot{token}/{method}", api.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield api, f"http://127.0.0.1:{port}/bot"
    finally:
        api.release.set()
        await runner.cleanup()


def message(update_id: int, chat: int, text: str) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {"message_id": update_id, "date": 0, "chat": {"id": chat, "type": "private"}, "text": text},
    }


def callback(update_id: int, chat: int, data: str) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "callback_query": {
            "id": f"cb{update_id}",
            "from": {"id": chat, "is_bot": False, "first_name": "op"},
            "chat_instance": "x",
            "data": data,
            "message": {"message_id": 1, "date": 0, "chat": {"id": chat, "type": "private"}, "text": "?"},
        },
    }
