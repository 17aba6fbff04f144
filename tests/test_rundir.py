"""RunDir, the one owner of a run folder: config.yaml reads back as the typed config and is the
text OmegaConf wrote before it (strings that YAML would read as numbers or booleans quoted)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bnnx.config import config_to_dict
from bnnx.errors import CheckpointError, ConfigError
from bnnx.train.rundir import RunDir, resolve_resume


@pytest.mark.parametrize("overrides", [["method=ste"], ["method=ilb", "dataset.data_dir='1e-3'"],
                                       ["method=rpr", "model=resnet20", "dataset=cifar10", "dataset.data_dir='n'"]])
def test_config_yaml_reads_back_and_is_omegaconfs_text(compose, tmp_path, overrides):
    config = compose(*overrides, f"out_dir={tmp_path}")
    run = RunDir(tmp_path)
    run.write_config(config)
    text = (tmp_path / "config.yaml").read_text()
    assert text == OmegaConf.to_yaml(OmegaConf.create(config_to_dict(config)))
    assert run.config() == config
    assert OmegaConf.to_container(OmegaConf.load(tmp_path / "config.yaml")) == config_to_dict(config)


def test_a_damaged_config_yaml_is_one_line(tmp_path):
    (tmp_path / "config.yaml").write_text("method: {name: ste\n")
    with pytest.raises(CheckpointError, match="corrupt or cut short"):
        RunDir(tmp_path).config()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a bnnx run"):
        RunDir(tmp_path / "empty").config()
    with pytest.raises(CheckpointError, match="does not exist"):
        RunDir(tmp_path / "none").config()


def test_resume_takes_the_recorded_config_and_refuses_a_different_one(compose, tmp_path):
    RunDir(tmp_path).write_config(compose("method=bop", "epochs=3", f"out_dir={tmp_path}"))
    resumed = resolve_resume(compose("resume=true", f"out_dir={tmp_path}"), ["resume=true", f"out_dir={tmp_path}"])
    assert (resumed.method.name, resumed.epochs, resumed.resume) == ("bop", 3, True)
    overrides = ["method=bop", "epochs=4", "resume=true", f"out_dir={tmp_path}"]
    with pytest.raises(ConfigError, match="epochs=4 but the run has 3"):
        resolve_resume(compose(*overrides), overrides)


def test_no_training_module_imports_omegaconf_even_inside_a_function():
    import bnnx.train

    for path in Path(bnnx.train.__file__).parent.glob("*.py"):
        names = {alias.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Import)
                 for alias in node.names}
        names |= {node.module or "" for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, ast.ImportFrom)}
        assert not any(name.split(".")[0] in ("omegaconf", "hydra") for name in names), path
