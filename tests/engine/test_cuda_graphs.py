"""The engine's choice about MLX's CUDA graphs: off by default, an explicit environment setting kept."""

import os

from realtime.engine.cuda_graphs import VARIABLE, use_cuda_graphs


def test_off_unless_the_environment_says(monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    use_cuda_graphs()
    assert os.environ[VARIABLE] == "0"


def test_an_explicit_setting_is_kept(monkeypatch):
    monkeypatch.setenv(VARIABLE, "1")
    use_cuda_graphs()
    assert os.environ[VARIABLE] == "1"


def test_a_choice_overrides_the_environment(monkeypatch):
    monkeypatch.setenv(VARIABLE, "0")
    use_cuda_graphs(True)
    assert os.environ[VARIABLE] == "1"
