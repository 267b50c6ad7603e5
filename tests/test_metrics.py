"""Metrics from a real session's drained events, with a hand-moved clock; and the Prometheus text."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from realtime.engine.fake_backend import FakeBackend
from realtime.engine.port import EngineHealth, StartGeneration
from realtime.metrics import ServerMetrics
from realtime.protocol import server_events as se
from realtime.session.session import Session
from realtime.session.settings import SessionSettings
from tests.conftest import cli_server, pcm16_b64, tone


class ManualClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def samples(metrics: ServerMetrics) -> dict[tuple[str, tuple], float]:
    """Every sample of the rendered text, keyed by name and sorted labels: what a scraper sees."""
    parsed = text_string_to_metric_families(metrics.render().decode())
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in parsed
        for sample in family.samples
    }


def send(session: Session, message: dict) -> None:
    session.receive_message(json.dumps(message))


def test_a_session_moves_every_metric():
    clock = ManualClock()
    load = EngineHealth(loaded=True, alive=True, queue_depth=3, batch_size=1)
    metrics = ServerMetrics(lambda: load, clock=clock)
    session = Session("sess_1", SessionSettings())
    observed = metrics.open_session()
    session.start()

    def pump() -> list:
        events, commands = session.drain()
        observed.observe(events, session.audio_received_ms)
        return commands

    pump()
    send(session, {"type": "input_audio_buffer.append", "audio": pcm16_b64(tone(1500))})
    send(session, {"type": "input_audio_buffer.commit"})
    send(session, {"type": "response.create"})
    (start,) = [c for c in pump() if isinstance(c, StartGeneration)]
    send(session, {"type": "no.such.event"})
    pump()

    outputs = list(
        FakeBackend(reply=lambda request: "one two three four five").generate(start.request, lambda: False)
    )
    clock.now_s += 0.25
    session.receive_engine_output(outputs[0])
    pump()
    clock.now_s += 2.0
    for output in outputs[1:]:
        session.receive_engine_output(output)
    pump()

    seen = samples(metrics)
    assert seen[("mlx_realtime_sessions_open", ())] == 1
    assert seen[("mlx_realtime_sessions_total", ())] == 1
    assert seen[("mlx_realtime_turns_total", (("kind", "audio"),))] == 1
    assert seen[("mlx_realtime_responses_total", (("status", "completed"),))] == 1
    assert seen[("mlx_realtime_output_tokens_total", ())] == 5
    assert seen[("mlx_realtime_errors_total", (("code", "unknown_event_type"),))] == 1
    # 1,500 ms of 24 kHz audio, counted once however often it is observed.
    assert seen[("mlx_realtime_audio_input_seconds_total", ())] == 1.5
    assert seen[("mlx_realtime_time_to_first_delta_seconds_count", ())] == 1
    assert seen[("mlx_realtime_time_to_first_delta_seconds_sum", ())] == 0.25
    assert seen[("mlx_realtime_time_to_first_delta_seconds_bucket", (("le", "0.3"),))] == 1
    assert seen[("mlx_realtime_time_to_first_delta_seconds_bucket", (("le", "0.2"),))] == 0
    # Four tokens after the first one, in two seconds.
    assert seen[("mlx_realtime_output_tokens_per_second_sum", ())] == 2.0
    assert seen[("mlx_realtime_engine_queue_depth", ())] == 3
    assert seen[("mlx_realtime_engine_batch_size", ())] == 1
    assert seen[("mlx_realtime_engine_alive", ())] == 1

    observed.close()
    observed.close()
    assert samples(metrics)[("mlx_realtime_sessions_open", ())] == 0


def test_typed_turns_and_cancelled_responses_are_labelled():
    metrics = ServerMetrics(lambda: EngineHealth(loaded=True, alive=False), clock=ManualClock())
    session = Session("sess_2", SessionSettings())
    observed = metrics.open_session()
    session.start()
    send(
        session,
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        },
    )
    send(session, {"type": "response.create"})
    send(session, {"type": "response.cancel"})
    events, commands = session.drain()
    (start,) = [c for c in commands if isinstance(c, StartGeneration)]
    session.receive_engine_output(next(iter(FakeBackend().generate(start.request, lambda: True))))
    more, _ = session.drain()
    observed.observe(events + more, session.audio_received_ms)

    seen = samples(metrics)
    assert seen[("mlx_realtime_turns_total", (("kind", "text"),))] == 1
    assert seen[("mlx_realtime_responses_total", (("status", "cancelled"),))] == 1
    assert seen[("mlx_realtime_time_to_first_delta_seconds_count", ())] == 0
    assert seen[("mlx_realtime_audio_input_seconds_total", ())] == 0
    assert seen[("mlx_realtime_engine_alive", ())] == 0


def test_function_call_items_are_not_turns_and_do_not_break_the_observer():
    # Clients create function_call / function_call_output items (the Agents SDK sends each tool's output).
    metrics = ServerMetrics(lambda: EngineHealth(loaded=True, alive=True), clock=ManualClock())
    session = Session("sess_3", SessionSettings())
    observed = metrics.open_session()
    session.start()
    call = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"}
    send(session, {"type": "conversation.item.create", "item": call})
    send(
        session,
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        },
    )
    events, _ = session.drain()
    added = [type(e.item) for e in events if isinstance(e, se.ConversationItemAdded)]
    assert added == [se.FunctionCallItemOut, se.FunctionCallOutputItemOut]
    observed.observe(events, session.audio_received_ms)
    assert not [key for key in samples(metrics) if key[0] == "mlx_realtime_turns_total"]


def _scrape(url: str, token: str | None) -> dict[tuple[str, tuple], float]:
    request = urllib.request.Request(
        f"{url}/metrics", headers={"Authorization": f"Bearer {token}"} if token else {}
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=")
        families = text_string_to_metric_families(reply.read().decode())
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}


@pytest.mark.slow
def test_scraping_the_real_server_after_a_real_session(tmp_path):
    with cli_server(["--metrics-token", "scrape-me"], tmp_path / "server.log") as url:
        with pytest.raises(urllib.error.HTTPError) as refused:
            _scrape(url, "wrong")
        assert refused.value.code == 401
        before = _scrape(url, "scrape-me")
        assert before[("mlx_realtime_sessions_total", ())] == 0

        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        with client.realtime.connect(model="gemma-4") as connection:
            connection.session.update(
                session={
                    "type": "realtime",
                    "output_modalities": ["text"],
                    "audio": {"input": {"turn_detection": None}},
                }
            )
            connection.input_audio_buffer.append(audio=pcm16_b64(tone(1000)))
            connection.input_audio_buffer.commit()
            connection.response.create(response={"max_output_tokens": 6})
            _wait_for(connection, "response.done")
            connection.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello"}]}
            )
            connection.response.create(response={"max_output_tokens": 6})
            _wait_for(connection, "response.done")
            connection.send({"type": "response.cancel"})
            _wait_for(connection, "error")
            during = _scrape(url, "scrape-me")
        after = _scrape(url, "scrape-me")

    assert during[("mlx_realtime_sessions_open", ())] == 1
    assert after[("mlx_realtime_sessions_open", ())] == 0
    assert after[("mlx_realtime_sessions_total", ())] == 1
    assert after[("mlx_realtime_turns_total", (("kind", "audio"),))] == 1
    assert after[("mlx_realtime_turns_total", (("kind", "text"),))] == 1
    finished = sum(v for (name, _), v in after.items() if name == "mlx_realtime_responses_total")
    assert finished == 2
    assert after[("mlx_realtime_time_to_first_delta_seconds_count", ())] == 2
    assert 0 < after[("mlx_realtime_time_to_first_delta_seconds_sum", ())] < 60
    assert after[("mlx_realtime_output_tokens_per_second_count", ())] >= 1
    assert 2 <= after[("mlx_realtime_output_tokens_total", ())] <= 12
    assert after[("mlx_realtime_audio_input_seconds_total", ())] == 1.0
    assert after[("mlx_realtime_errors_total", (("code", "response_cancel_not_active"),))] == 1
    assert after[("mlx_realtime_engine_alive", ())] == 1
    assert after[("mlx_realtime_engine_queue_depth", ())] == 0


def _wait_for(connection, event_type: str):
    return next(event for event in connection if event.type == event_type)
