"""The settings file: read, never imported; found in a fixed order; anything odd refused naming file and line."""

from __future__ import annotations

import pytest

from docbot import ConfigError
from docbot.config import Config, load_config, read_settings, settings_file
from conftest import REPO


def test_the_shipped_settings_file_equals_the_package_defaults():
    assert Config().replace(**read_settings(REPO / "fine_tuning_config.py")) == Config()


def test_docbot_config_then_the_working_folder_then_beside_the_script(tmp_path, monkeypatch):
    monkeypatch.delenv("DOCBOT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("__main__.__file__", str(tmp_path / "app" / "run.py"), raising=False)
    assert settings_file() is None and load_config() == Config()
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "fine_tuning_config.py").write_text("TOP_K = 4\n")
    assert settings_file() == tmp_path / "app" / "fine_tuning_config.py" and load_config().top_k == 4
    (tmp_path / "fine_tuning_config.py").write_text("TOP_K = 5\nLORA_TARGET_MODULES = ['q_proj']\n")
    assert load_config().top_k == 5 and load_config().lora_target_modules == ("q_proj",)
    chosen = tmp_path / "team.py"
    chosen.write_text('"""Team settings."""\nTOP_K = 6  # a comment\nPROVIDER: str = "ollama"\n')
    monkeypatch.setenv("DOCBOT_CONFIG", str(chosen))
    assert load_config().top_k == 6 and load_config(top_k=2).top_k == 2 and load_config().provider == "ollama"
    monkeypatch.setenv("DOCBOT_CONFIG", str(tmp_path / "missing.py"))
    with pytest.raises(ConfigError, match="DOCBOT_CONFIG names .*missing.py, which is not a file"):
        load_config()


@pytest.mark.parametrize("text, message", [
    ("TOP_K = 3\nTOPK = 4\n", r"settings.py:2: unknown setting TOPK; known: .*TOP_K"),
    ("TOP_K = '3'\n", r"settings.py:1: TOP_K must be a int, got str '3'"),
    ("TOP_K = 2 * 3\n", r"settings.py:1: TOP_K must be a literal value"),
    ("import os\n", r"settings.py:1: only assignments like TOP_K = 3"),
    ("top_k = 3\n", r"settings.py:1: unknown setting top_k"),
    ("TOP_K = 0\n", r"config top_k must be > 0, got 0"),
    ("TOP_K = (\n", r"settings.py:1: cannot be read as settings"),
    ("LEARNING_RATE = float('nan')\n", r"settings.py:1: LEARNING_RATE must be a literal value"),
])
def test_a_bad_settings_file_is_refused_naming_the_line(tmp_path, monkeypatch, text, message):
    path = tmp_path / "settings.py"
    path.write_text(text)
    monkeypatch.setenv("DOCBOT_CONFIG", str(path))
    with pytest.raises(ConfigError, match=message):
        load_config()
