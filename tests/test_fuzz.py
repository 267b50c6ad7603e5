"""20,000 random and mutated client events over the real server: only attributed client errors come back."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import re

import websockets

from realtime.engine.fake_backend import FakeBackend
from tests.conftest import pcm16_b64, png_data_uri, strict_server_event, tone
from tests.test_server import TIMEOUT_S, running_server

N_EVENTS = 20_000
N_CONNECTIONS = 8
END_MARK = "fz_end"


def valid_events(rng: random.Random) -> list[dict]:
    text = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    return [
        {"type": "session.update", "session": {"type": "realtime", "instructions": "be brief"}},
        {"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}},
        {
            "type": "session.update",
            "session": {"audio": {"input": {"turn_detection": {"type": "server_vad"}}}},
        },
        {"type": "session.update", "session": {"max_output_tokens": rng.choice([1, 8, "inf"])}},
        {"type": "input_audio_buffer.append", "audio": pcm16_b64(tone(rng.choice([20, 120, 300])))},
        {"type": "input_audio_buffer.commit"},
        {"type": "input_audio_buffer.clear"},
        {"type": "input_image_buffer.append", "image": png_data_uri((9, 9, 9), (8, 8))},
        {"type": "conversation.item.create", "item": text},
        {"type": "conversation.item.create", "item": {**text, "id": f"it_{rng.randrange(50)}"}},
        {"type": "conversation.item.retrieve", "item_id": f"it_{rng.randrange(50)}"},
        {"type": "conversation.item.delete", "item_id": f"it_{rng.randrange(50)}"},
        {
            "type": "conversation.item.truncate",
            "item_id": f"it_{rng.randrange(50)}",
            "content_index": 0,
            "audio_end_ms": 10,
        },
        {"type": "response.create", "response": {"max_output_tokens": rng.choice([1, 3])}},
        {"type": "response.create", "response": {"conversation": "none", "input": [text]}},
        {"type": "response.cancel"},
        {"type": "output_audio_buffer.clear"},
    ]


def odd_value(rng: random.Random, depth: int = 0) -> object:
    choices = [
        None,
        True,
        0,
        -1,
        2**63,
        10**30,
        1.5e308,
        -0.0,
        "",
        "x" * rng.choice([1, 100, 20_000]),
        "\u0000\ud7ff\U0001f600'\"\\",
        "inf",
        "data:image/png;base64,!!!!",
        base64.b64encode(b"\x01\x02").decode(),
        [],
        {},
        [1, "a", None],
        {"type": "bogus"},
    ]
    if depth < 2 and rng.random() < 0.2:
        return {"type": odd_value(rng, depth + 1), "k": odd_value(rng, depth + 1)}
    return rng.choice(choices)


def mutate(event: dict, rng: random.Random) -> dict:
    event = json.loads(json.dumps(event))
    for _ in range(rng.randint(1, 3)):
        target, path = event, []
        while isinstance(target, dict) and target and rng.random() < 0.6:
            key = rng.choice(list(target))
            if not isinstance(target[key], (dict, list)) or not target[key]:
                break
            path.append(key)
            target = target[key] if isinstance(target[key], dict) else target[key][0]
        if not isinstance(target, dict):
            continue
        action = rng.random()
        if action < 0.35 and target:
            target[rng.choice(list(target))] = odd_value(rng)
        elif action < 0.55 and target:
            del target[rng.choice(list(target))]
        elif action < 0.75:
            target[rng.choice(["type", "item_id", "extra", "role", "content", "session"])] = odd_value(rng)
        else:
            event["type"] = rng.choice([event.get("type", ""), "x" * 5000, "response.", "Session.Update", 7])
    return event


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def raw_message(rng: random.Random, index: int) -> str | bytes:
    """One client message; most carry an event_id, some of which are not strings."""
    event = rng.choice(valid_events(rng))
    if rng.random() < 0.7:
        event = mutate(event, rng)
    roll = rng.random()
    if roll < 0.85:
        event["event_id"] = f"fz_{index}"
    elif roll < 0.9:
        event["event_id"] = rng.choice([5, None, ["fz"], {"a": 1}])
    text = json.dumps(event)
    roll = rng.random()
    if roll < 0.04:
        return text[: rng.randrange(len(text))]  # cut short
    if roll < 0.06:
        return text.replace('"', "", 1)
    if roll < 0.08:
        tools = deep(rng.choice([70, 2000]))
        return f'{{"type":"session.update","event_id":"fz_{index}","session":{{"tools":{tools}}}}}'
    if roll < 0.09:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    if roll < 0.12:
        return text.encode()
    if roll < 0.13:
        return rng.choice(["", "null", "[]", "1", '"s"', "{}", "\ufeff{}"])
    return text


def readable_event_id(raw: str | bytes) -> str | None:
    """The event_id an error must carry: the top-level string event_id of a message that is a JSON object."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    except RecursionError:  # the deep messages above: the id is their second member
        match = re.match(r'\{"type":"[^"]*","event_id":"([^"\\]*)"', raw if isinstance(raw, str) else "")
        return match.group(1) if match else None
    event_id = obj.get("event_id") if isinstance(obj, dict) else None
    return event_id if isinstance(event_id, str) else None


async def fuzz_one_connection(host: str, seed: int, n_events: int) -> tuple[list[str | bytes], list[dict]]:
    rng = random.Random(seed)
    sent = [raw_message(rng, i) for i in range(n_events)]
    errors: list[dict] = []
    async with websockets.connect(f"ws://{host}/v1/realtime", max_size=None) as ws:

        async def read_until_end() -> None:
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
                if event["type"] == "error":
                    errors.append(event)
                    if event["error"]["event_id"] == END_MARK:
                        return

        reader = asyncio.create_task(read_until_end())
        for raw in sent:
            await ws.send(raw)
        await ws.send(
            json.dumps({"type": "conversation.item.retrieve", "item_id": "nope", "event_id": END_MARK})
        )
        await asyncio.wait_for(reader, 60)
    return sent, errors[:-1]


def check_attribution(sent: list[str | bytes], errors: list[dict]) -> None:
    """Errors come in message order; one with an id names that message (the id may also have been found
    in a broken message), one without names a message whose id was unreadable, after the last one matched."""
    index_of = {f"fz_{i}": i for i in range(len(sent))}
    unattributed = [i for i, raw in enumerate(sent) if readable_event_id(raw) is None]
    last = -1
    for error in errors:
        event_id = error["error"]["event_id"]
        if event_id is not None:
            assert index_of[event_id] > last, error
            last = index_of[event_id]
        else:
            later = [i for i in unattributed if i > last]
            assert later, f"an error without event_id, but every message since had a readable one: {error}"
            last = later[0]


async def test_twenty_thousand_fuzzed_events_give_only_attributed_client_errors(caplog):
    caplog.set_level(logging.WARNING)
    backend = FakeBackend(seconds_per_token=0)
    async with running_server(backend=backend) as (host, server):
        per_connection = N_EVENTS // N_CONNECTIONS
        results = await asyncio.gather(
            *(fuzz_one_connection(host, s, per_connection) for s in range(N_CONNECTIONS))
        )
        assert server.health()["status"] == "ok"
    all_errors = [e for _, errors in results for e in errors]
    codes = {e["error"]["code"] for e in all_errors}
    assert "internal_error" not in codes and all(e["error"]["type"] != "server_error" for e in all_errors)
    for code in codes:
        strict_server_event(next(e for e in all_errors if e["error"]["code"] == code))
    for sent, errors in results:
        check_attribution(sent, errors)
    assert all(len(e["error"]["message"]) < 400 for e in all_errors)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text
    assert len(all_errors) > N_EVENTS // 4 and len(codes) > 8, codes
    print(f"{len(all_errors)} errors, codes: {sorted(codes)}")
