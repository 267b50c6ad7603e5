"""The HTTP API's routes on an aiohttp app: chat completions, messages, the model list, behind the API key."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from ..access import AccessPolicy
from ..engine.port import Engine
from ..protocol.errors import ProtocolError
from ..protocol.ids import IdFactory
from ..vision.images import ImageLimits
from .anthropic_messages import AnthropicMessages, anthropic_error
from .engine_call import ApiContext
from .openai_chat import OpenAIChat, openai_error
from .openai_types import ModelCard, ModelList

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpApi:
    """Every HTTP request is its own engine session, sharing the engine with the realtime sessions."""

    def __init__(
        self,
        engine: Engine,
        model: str,
        *,
        access: AccessPolicy | None = None,
        default_max_output_tokens: int = 1024,
        images: ImageLimits | None = None,
        ids: IdFactory | None = None,
    ) -> None:
        context = ApiContext(
            engine, model, ids or IdFactory(), default_max_output_tokens, images or ImageLimits()
        )
        self._model = model
        self._access = access or AccessPolicy()
        self._chat = OpenAIChat(context)
        self._messages = AnthropicMessages(context)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self._guarded(self._chat.handle, _openai_refusal)),
            web.post("/v1/messages", self._guarded(self._messages.handle, _anthropic_refusal)),
            web.get("/v1/models", self._guarded(self._models, _openai_refusal)),
        ]

    async def _models(self, http: web.Request) -> web.Response:
        body = ModelList([ModelCard(self._model)])
        return web.Response(body=msgspec.json.encode(body), content_type="application/json")

    def _guarded(self, handler: Handler, refusal: Callable[[int, str], web.Response]) -> Handler:
        async def guarded(http: web.Request) -> web.StreamResponse:
            if not self._access.origin_allowed(http.headers):
                return refusal(403, "This browser origin is not allowed; see --allowed-origin.")
            if not self._authorized(http):
                return refusal(401, "Invalid or missing API key.")
            return await handler(http)

        return guarded

    def _authorized(self, http: web.Request) -> bool:
        if self._access.authorized(http.headers):
            return True
        # Anthropic clients send the key as x-api-key rather than a Bearer token.
        offered = http.headers.get("x-api-key", "").strip()
        expected = (self._access.api_key or "").encode()
        return bool(offered) and hmac.compare_digest(offered.encode(), expected)


def _openai_refusal(status: int, message: str) -> web.Response:
    code = "invalid_api_key" if status == 401 else "origin_not_allowed"
    return openai_error(ProtocolError(code, message), status)


def _anthropic_refusal(status: int, message: str) -> web.Response:
    return anthropic_error(message, status, "authentication_error" if status == 401 else "permission_error")
