"""The HTTP API's routes on an aiohttp app: chat completions, messages, the model list, behind the API key."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

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
        api_key: str | None = None,
        default_max_output_tokens: int = 1024,
        images: ImageLimits | None = None,
        ids: IdFactory | None = None,
    ) -> None:
        context = ApiContext(
            engine, model, ids or IdFactory(), default_max_output_tokens, images or ImageLimits()
        )
        self._model = model
        self._api_key = api_key
        self._chat = OpenAIChat(context)
        self._messages = AnthropicMessages(context)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self._guarded(self._chat.handle, _openai_unauthorized)),
            web.post("/v1/messages", self._guarded(self._messages.handle, _anthropic_unauthorized)),
            web.get("/v1/models", self._guarded(self._models, _openai_unauthorized)),
        ]

    async def _models(self, http: web.Request) -> web.Response:
        body = ModelList([ModelCard(self._model)])
        return web.Response(body=msgspec.json.encode(body), content_type="application/json")

    def _guarded(self, handler: Handler, unauthorized: Callable[[], web.Response]) -> Handler:
        async def guarded(http: web.Request) -> web.StreamResponse:
            if not self._authorized(http):
                return unauthorized()
            return await handler(http)

        return guarded

    def _authorized(self, http: web.Request) -> bool:
        if not self._api_key:
            return True
        # OpenAI clients send a Bearer token, Anthropic clients x-api-key.
        offered = [http.headers.get("Authorization", "").removeprefix("Bearer ").strip()]
        offered.append(http.headers.get("x-api-key", "").strip())
        expected = self._api_key.encode()
        return any(hmac.compare_digest(key.encode(), expected) for key in offered if key)


def _openai_unauthorized() -> web.Response:
    error = ProtocolError(
        "invalid_api_key", "Invalid or missing API key.", error_type="invalid_request_error"
    )
    return openai_error(error, 401)


def _anthropic_unauthorized() -> web.Response:
    return anthropic_error("Invalid or missing API key.", 401, "authentication_error")
