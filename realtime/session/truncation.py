"""`session.truncation`: how a conversation is cut to fit the model's context, parsed and stated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..protocol.errors import ProtocolError

# "auto" moves the window in large steps too: dropping to half the limit leaves room for many turns that
# extend the engine's cache before the next cut forces it to prefill the conversation again.
AUTO_RETENTION_RATIO = 0.5

_PARAM = "session.truncation"


@dataclass(frozen=True)
class Truncation:
    mode: Literal["auto", "disabled", "retention_ratio"] = "auto"
    retention_ratio: float = AUTO_RETENTION_RATIO
    # The client's cap on conversation tokens after the instructions; None: the model's context decides.
    post_instructions_tokens: int | None = None

    @classmethod
    def from_wire(cls, value: Any) -> Truncation:
        if value in ("auto", "disabled"):
            return cls(mode=value)
        if not isinstance(value, dict) or value.get("type") != "retention_ratio":
            raise ProtocolError(
                "invalid_value",
                "`truncation` must be 'auto', 'disabled' or an object of type 'retention_ratio'.",
                param=_PARAM,
            )
        unknown = set(value) - {"type", "retention_ratio", "token_limits"}
        if unknown:
            name = sorted(unknown)[0][:40]
            raise ProtocolError("unknown_parameter", f"Unknown parameter `{name}`.", param=f"{_PARAM}.{name}")
        ratio = value.get("retention_ratio")
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0.0 <= ratio <= 1.0:
            raise ProtocolError(
                "invalid_value",
                "`retention_ratio` must be a number between 0.0 and 1.0.",
                param=f"{_PARAM}.retention_ratio",
            )
        return cls("retention_ratio", float(ratio), _post_instructions(value.get("token_limits")))

    def to_wire(self) -> str | dict[str, Any]:
        if self.mode != "retention_ratio":
            return self.mode
        wire: dict[str, Any] = {"type": "retention_ratio", "retention_ratio": self.retention_ratio}
        if self.post_instructions_tokens is not None:
            wire["token_limits"] = {"post_instructions": self.post_instructions_tokens}
        return wire


def _post_instructions(token_limits: Any) -> int | None:
    if token_limits is None:
        return None
    param = f"{_PARAM}.token_limits"
    if not isinstance(token_limits, dict) or set(token_limits) - {"post_instructions"}:
        raise ProtocolError("invalid_value", "`token_limits` may only hold `post_instructions`.", param=param)
    limit = token_limits.get("post_instructions")
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ProtocolError(
            "invalid_value",
            "`post_instructions` must be a positive integer.",
            param=f"{param}.post_instructions",
        )
    return limit
