"""The real `python -m realtime` command as a subprocess: usage errors, start-up failures, progress lines."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from importlib.metadata import version
from pathlib import Path

import pytest

from realtime import cli
from realtime.cli import build_parser
from tests.conftest import cli_env, cli_server, error_line, run_cli


def test_version_names_the_installed_package():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"mlx-realtime {version('mlx-realtime')}"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["serve", "--port", "99999"], {}, "argument --port: 99999 is out of range: it must be 0-65535"),
        (["serve", "--port", "http"], {}, "argument --port: 'http' is not a whole number"),
        (
            ["serve", "--max-output-tokens", "5000"],
            {},
            "--max-output-tokens: 5000 is out of range: it must be 1-4096",
        ),
        (["serve", "--max-output-tokens", "0"], {}, "--max-output-tokens: 0 is out of range"),
        (
            ["serve", "--max-sessions", "0"],
            {},
            "argument --max-sessions: 0 is out of range: it must be 1-1024",
        ),
        (["serve"], {"MLX_REALTIME_PORT": "eighty"}, "argument --port: 'eighty' is not a whole number"),
        (["serve", "--log-level", "LOUD"], {}, "argument --log-level: invalid choice: 'LOUD'"),
        (["serve", "--no-such-flag"], {}, "unrecognized arguments: --no-such-flag"),
        (["serve", "--send-timeout", "0"], {}, "argument --send-timeout: 0 is out of range"),
        (["serve", "--allowed-origin", "not an origin"], {}, "argument --allowed-origin: not an origin"),
        (
            ["serve", "--max-message-bytes", "4096", "--max-inflight-bytes", "2048"],
            {},
            "--max-inflight-bytes must be at least --max-message-bytes",
        ),
        (["serve", "--tls-key", "key.pem"], {}, "--tls-cert and --tls-key go together"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args, env, message):
    result = run_cli(*args, **env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    line = error_line(result)
    assert re.fullmatch(r"mlx-realtime( serve)?: error: .+ \(see `mlx-realtime( serve)? --help`\)", line)
    assert message in line


def test_log_level_is_accepted_before_and_after_the_subcommand():
    parser = build_parser()
    assert parser.parse_args(["serve", "--log-level", "debug"]).log_level == "DEBUG"
    assert parser.parse_args(["--log-level", "warning", "serve"]).log_level == "WARNING"
    assert parser.parse_args(["--log-level", "warning", "serve", "--log-level", "ERROR"]).log_level == "ERROR"
    assert parser.parse_args(["serve"]).log_level == "INFO"


@pytest.fixture
def busy_port():
    with socket.create_server(("127.0.0.1", 0)) as holder:
        yield holder.getsockname()[1]


def test_a_busy_port_fails_in_one_line_before_any_model_work(busy_port, tmp_path):
    # An empty cache: if the model were touched first, the demo model would be built here.
    result = run_cli("serve", "--port", str(busy_port), MLX_REALTIME_CACHE=str(tmp_path / "cache"))
    assert result.returncode == 1
    assert error_line(result) == (
        f"mlx-realtime: error: cannot listen on 127.0.0.1:{busy_port}: the port is already in use; "
        "stop the other server or choose another --port (0 picks a free one)"
    )
    assert not (tmp_path / "cache").exists()


def _model_dir(tmp_path: Path, config: dict | None) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    if config is not None:
        (model / "config.json").write_text(json.dumps(config))
    return model


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "no config.json in {model}; pass a Gemma 4 model directory (with config.json)"),
        ({"model_type": "llama"}, "{model} is a 'llama' model; mlx-realtime serves Gemma 4 only"),
    ],
)
def test_a_directory_that_is_not_a_gemma4_model_fails_in_one_line(tmp_path, config, message):
    model = _model_dir(tmp_path, config)
    result = run_cli("serve", "--port", "0", "--model", str(model))
    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith(
        f"mlx-realtime: error: cannot {'use' if config is None else 'serve'} --model {model}"
    )
    assert message.format(model=model) in line


def test_an_unfetchable_repo_id_fails_in_one_line():
    result = run_cli("serve", "--port", "0", "--model", "nobody/no-such-gemma", HF_HUB_OFFLINE="1")
    assert result.returncode == 1
    assert "fetching nobody/no-such-gemma from Hugging Face" in result.stderr
    assert error_line(result) == (
        "mlx-realtime: error: cannot use --model nobody/no-such-gemma: "
        "cannot download 'nobody/no-such-gemma': "
        "Hugging Face is unreachable (offline?) and the repo is not in the local cache; "
        "check the repo id and the network, or pass a local model directory"
    )


def test_debug_log_level_adds_the_traceback(tmp_path):
    model = _model_dir(tmp_path, None)
    result = run_cli("serve", "--log-level", "DEBUG", "--port", "0", "--model", str(model))
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ModelNotFoundError" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("mlx-realtime: error: cannot use --model")


def test_a_broken_checkpoint_fails_in_one_line_after_loading_starts(tmp_path):
    # A Gemma 4 config with no weights or tokenizer: the failure comes from the engine thread.
    config = json.loads((_demo_model_config()).read_text())
    model = _model_dir(tmp_path, config)
    result = run_cli(
        "serve", "--port", "0", "--model", str(model), MLX_REALTIME_CACHE=str(tmp_path / "cache")
    )
    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith(f"mlx-realtime: error: cannot load the model in {model}: ")
    assert line.endswith("(--log-level DEBUG shows the traceback)")


def test_an_unexpected_start_up_failure_is_one_line_too(monkeypatch, capsys):
    def fail(host: str, port: int):
        raise ValueError("something\nunforeseen")

    monkeypatch.setattr(cli, "bind_listener", fail)
    assert cli.main(["--log-level", "WARNING", "serve", "--port", "0"]) == 1
    assert capsys.readouterr().err == (
        "mlx-realtime: error: start-up failed: ValueError: something unforeseen; "
        "rerun with --log-level DEBUG "
        "for the traceback and report it if it looks like a bug\n"
    )


def _demo_model_config() -> Path:
    from realtime.engine.demo_model import ensure_demo_model

    return ensure_demo_model() / "config.json"


@pytest.mark.slow
def test_first_start_reports_the_demo_build_and_kernel_compilation_then_serves(tmp_path):
    env = cli_env(MLX_REALTIME_CACHE=str(tmp_path / "cache"))
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    with cli_server([], first_log, env=env) as url:
        with urllib.request.urlopen(f"{url}/healthz", timeout=30) as reply:
            assert json.load(reply)["status"] == "ok"
    first = first_log.read_text()
    assert "building the tiny demo model in" in first and "(first start only" in first
    assert "compiling kernels, first start only" in first
    assert "model ready in" in first and "Traceback" not in first

    with cli_server([], second_log, env=env):
        pass
    second = second_log.read_text()
    assert "building the tiny demo model" not in second
    assert "compiling kernels" not in second and "warming up" in second


def test_make_demo_model_reports_progress(tmp_path):
    result = run_cli("make-demo-model", str(tmp_path / "demo"), "--log-level", "WARNING")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"building the demo model in {tmp_path / 'demo'} (a few seconds)"
    assert lines[1].startswith(f"wrote the demo model to {tmp_path / 'demo'} in ")
    assert (tmp_path / "demo" / "config.json").is_file()
