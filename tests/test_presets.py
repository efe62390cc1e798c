"""Presets (conf/scale/<model>_<data>.yaml): each names a real model x data pair, is printed, recorded and can be
turned off with scale=none."""
from __future__ import annotations

import json

from omegaconf import OmegaConf

from conftest import CONF, compose_config
from gan.train import train

def test_every_preset_names_an_existing_model_and_data_pair_and_records_itself():
    models = {p.stem for p in (CONF / "model").glob("*.yaml") if not p.stem.startswith("_")}
    data = {p.stem for p in (CONF / "data").glob("*.yaml")}
    for path in (CONF / "scale").glob("*.yaml"):
        assert path.read_text().startswith("# @package _global_\n"), path.name
        assert OmegaConf.load(path).preset == path.stem, f"{path.name} must set preset: {path.stem}"
        if path.stem == "none":
            continue
        pairs = [(m, path.stem[len(m) + 1:]) for m in models if path.stem.startswith(m + "_")]
        assert any(d in data for _, d in pairs), f"conf/scale/{path.name} names no model x data pair"


def test_a_preset_is_applied_recorded_and_can_be_turned_off(tmp_path):
    preset = compose_config(tmp_path / "a", "model=stylegan2", "data=digits")
    assert preset.preset == "stylegan2_digits" and preset.model.g_lr == 5e-3
    plain = compose_config(tmp_path / "b", "model=stylegan2", "data=digits", "scale=none")
    assert plain.preset == "none" and plain.model.g_lr == 2e-3
    assert compose_config(tmp_path / "c", "model=dcgan", "data=digits").preset == "none"  # no file for the pair


def test_the_preset_is_printed_and_in_the_summary(tmp_path, capsys):
    train(compose_config(tmp_path / "run", "model=progan", "data=digits", "g_iters=1", "model.generator.channel_max=8",
                         "model.discriminator.channel_max=8"))
    assert "Preset progan_digits: conf/scale/progan_digits.yaml" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["preset"] == "progan_digits"
    assert OmegaConf.load(tmp_path / "run" / "config.yaml").preset == "progan_digits"
