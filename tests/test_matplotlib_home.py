"""matplotlib keeps its font cache in the segmodels home, so a step builds it once per home, not once per process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
DRAW = (  # through pyplot(), which every figure segmodels logs uses; without torch and mlflow a process starts in 0.5 s
    "import logging; logging.basicConfig(level=logging.INFO); from segmodels.visualize import pyplot; "
    "figure, axes = pyplot().subplots(); axes.set_title('a'); figure.tight_layout()"
)
FONT_CACHE_NOISE = ("font cache", "fontManager", "temporary cache directory")


def draw_in_a_new_process(env: dict) -> str:
    result = subprocess.run(
        [sys.executable, "-c", DRAW], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stderr


def test_a_second_process_does_not_rebuild_the_font_cache_when_home_is_unusable(tmp_path):
    unusable_home = tmp_path / "home-is-a-file"  # ~/.cache cannot be made: matplotlib falls back to a temp folder
    unusable_home.write_text("")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")
    }
    env.update({"HOME": str(unusable_home), "SEGMODELS_HOME": str(tmp_path / "segmodels-home")})
    first = draw_in_a_new_process(env)
    assert "generated new fontManager" in first, first  # built once, into the segmodels home
    assert list((tmp_path / "segmodels-home" / "matplotlib").glob("fontlist-*.json"))
    second = draw_in_a_new_process(env)
    assert not [line for line in second.splitlines() if any(noise in line for noise in FONT_CACHE_NOISE)], second


def test_mplconfigdir_when_set_is_left_alone(tmp_path):
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mine"), "SEGMODELS_HOME": str(tmp_path / "segmodels-home")}
    draw_in_a_new_process(env)
    assert list((tmp_path / "mine").glob("fontlist-*.json"))
    assert not (tmp_path / "segmodels-home" / "matplotlib").exists()
