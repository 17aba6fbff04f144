"""Bad input: one line, exit code 2, no traceback, nothing already on disk changed."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

BNNX = [sys.executable, "-m", "bnnx.cli.__main__"]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(code, output, *fragments):
    assert code == 2, output
    lines = [line for line in output.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(lines) <= 3 and len(errors) == 1, output
    assert "Traceback" not in output
    for fragment in fragments:
        assert fragment in errors[0], output


# `{run}` stands for a finished run's dir: a refused command must leave it as it was.
BAD_INPUTS = [
    # top-level keys
    ("seed=x", ["seed must be an integer", "'x'"]),
    ("seed=1.5", ["seed must be an integer", "1.5"]),
    ("seed=-1", ["seed must be in [0, 4294967296)", "-1"]),
    ("seed=true", ["seed must be an integer", "true"]),
    ("epochs=abc", ["epochs must be an integer", "'abc'"]),
    ("epochs=-1", ["epochs must be >= 1", "-1"]),
    ("batch_size=0", ["batch_size must be >= 1", "0"]),
    ("batch_size=1.5", ["batch_size must be an integer", "1.5"]),
    ("eval_batch_size=[64]", ["eval_batch_size must be an integer", "[64]"]),
    ("checkpoint_every=0", ["checkpoint_every must be >= 1", "0"]),
    ("checkpoint_every=often", ["checkpoint_every must be an integer or null", "'often'"]),
    ("resume=yes", ["resume must be true or false", "'yes'"]),
    ("out_dir=[a]", ["out_dir must be a string or null", "['a']"]),
    ("foo=1", ["unknown key 'foo'", "epochs"]),
    # method (every method's own keys)
    ("method=nope", ["unknown method 'nope'", "ste", "fp"]),
    ("method.lrr=1", ["unknown key 'method.lrr'", "lr"]),
    ("method.lr=-0.1", ["method.lr must be > 0", "-0.1"]),
    ("method.lr=inf", ["method.lr must be a finite number", "inf"]),
    ("method.lr=nan", ["method.lr must be a finite number", "nan"]),
    ("method.lr=fast", ["method.lr must be a finite number", "'fast'"]),
    ("method.schedule=steps", ["method.schedule must be one of constant, cosine, linear", "'steps'"]),
    ("method.latent_clip=0", ["method.latent_clip must be > 0", "0"]),
    ("method=bmd method.beta_every=2.5", ["method.beta_every must be an integer", "2.5"]),
    ("method=bmd method.beta_growth=0.5", ["method.beta_growth must be >= 1", "0.5"]),
    ("method=bmd method.beta_steps=ceil", ["method.beta_steps must be one of floor, md_bnn", "'ceil'"]),
    ("method=bmd method.lr_decay=1.5", ["method.lr_decay must be in (0, 1]", "1.5"]),
    ("method=bnew method.lr_restarts=x", ["method.lr_restarts must be one of poster, stages", "'x'"]),
    ("method.weight_gate=false model.kernel_quantizer=approx_sign",
     ["method.weight_gate=false needs model.kernel_quantizer=sign_ste", "approx_sign"]),
    ("method=bop method.gamma=2", ["method.gamma must be in (0, 1]", "2"]),
    ("method=bop method.threshold=-1e-8", ["method.threshold must be >= 0", "-1e-08"]),
    ("method=bop method.gamma_decay_every_epochs=-1", ["method.gamma_decay_every_epochs must be >= 0", "-1"]),
    ("method=bnew method.stages=[0.5,0.5]", ["method.stages must be a list of 4 finite numbers", "[0.5, 0.5]"]),
    ("method=bnew method.stages=[0.2,0.6,0.1,x]", ["method.stages[3] must be a finite number", "'x'"]),
    ("method=bnew method.stages=[0.2,0.6,0.1,0.2]", ["method.stages must sum to 1", "1.1"]),
    ("method=bnew method.schedule=cosine", ["method.schedule must be linear", "'cosine'"]),
    ("method=rpr method.levels=quaternary", ["method.levels must be one of binary, ternary", "'quaternary'"]),
    ("method=rpr method.freezing_fraction=0", ["method.freezing_fraction must be in (0, 1]", "0"]),
    ("method=ppt method.fp_fraction=1", ["method.fp_fraction must be in [0, 1)", "1"]),
    ("method=ppt method.inner=fp", ["unknown method.inner 'fp'", "ste"]),
    ("method=ppt method.inner_config={lr:-1}", ["method.inner_config", "method.lr must be > 0", "-1"]),
    ("method=ppt method.inner_config={lrr:1}", ["unknown key 'method.inner_config.lrr'", "latent_clip"]),
    ("method=ilb method.order=sideways", ["method.order must be one of", "sensitivity", "'sideways'"]),
    ("method=ilb method.epochs_per_layer=0", ["method.epochs_per_layer must be >= 1", "0"]),
    ("method=ilb method.initial_binary=5", ["method.initial_binary must be a list of strings", "5"]),
    ("method=ilb method.sensitivity_holdout=1", ["method.sensitivity_holdout must be in [0, 1)", "1"]),
    # model: common keys, each zoo model's options, quantizer arguments
    ("model=nope", ["unknown model 'nope'", "mlp"]),
    ("model.hiddn=[3]", ["unknown key 'model.hiddn'", "hidden"]),
    ("model=convnet model.hidden=[3]", ["unknown key 'model.hidden'", "widths"]),
    ("model.hidden=[0]", ["model.hidden[0] must be >= 1", "0"]),
    ("model.hidden=[16,x]", ["model.hidden[1] must be an integer", "'x'"]),
    ("model.hidden=5", ["model.hidden must be a list of integers", "5"]),
    ("model.activation=swish", ["model.activation must be one of hardtanh, identity, prelu, relu", "'swish'"]),
    ("model=convnet model.widths=[8,-1]", ["model.widths[1] must be >= 1", "-1"]),
    ("model=resnet20 model.width_multiplier=0", ["model.width_multiplier must be > 0", "0"]),
    ("model=resnet20 model.cifar_stem=maybe", ["model.cifar_stem must be true or false", "'maybe'"]),
    ("model.fp=1", ["model.fp must be true or false", "1"]),
    ("model.scaling=sideways", ["model.scaling must be one of learned, mean_abs, none", "'sideways'"]),
    (
        "model.real_roles=[first,middle]",
        ["model.real_roles[1] must be one of first, hidden, last, shortcut", "'middle'"],
    ),
    ("model.real_paths=['[']", ["model.real_paths has an invalid regex", "'['"]),
    ("model.kernel_quantizer=nope", ["model.kernel_quantizer must be one of", "sign_ste", "'nope'"]),
    ("model.kernel_quantizer_args={clip:-1}", ["model.kernel_quantizer_args.clip must be > 0", "-1"]),
    ("model.kernel_quantizer_args={clip:abc}", ["model.kernel_quantizer_args.clip must be a finite number", "'abc'"]),
    ("model.kernel_quantizer_args={clp:1}", ["unknown key 'model.kernel_quantizer_args.clp'", "clip"]),
    ("model.kernel_quantizer_args=5", ["model.kernel_quantizer_args must be a mapping or null", "5"]),
    (
        "model.kernel_quantizer=ternary model.kernel_quantizer_args={delta:-0.5}",
        ["model.kernel_quantizer_args.delta must be >= 0", "-0.5"],
    ),
    (
        "model.input_quantizer=swish_sign model.input_quantizer_args={beta:0}",
        ["model.input_quantizer_args.beta must be > 0", "0"],
    ),
    # dataset
    ("dataset=nope", ["unknown dataset 'nope'", "digits"]),
    ("dataset.subset=0", ["dataset.subset must be >= 1", "0"]),
    ("dataset.image_size=abc", ["dataset.image_size must be an integer", "'abc'"]),
    ("dataset.augment=2", ["dataset.augment must be true or false", "2"]),
    ("dataset.foo=1", ["unknown key 'dataset.foo'", "subset"]),
    # distill, analysis
    ("distill.alpha=2", ["distill.alpha must be in [0, 1]", "2"]),
    ("distill.temperature=0", ["distill.temperature must be > 0", "0"]),
    ("distill.temperature=inf", ["distill.temperature must be a finite number", "inf"]),
    ("distill.teacher=5", ["distill.teacher must be a string or null", "5"]),
    ("distill.foo=1", ["unknown key 'distill.foo'", "temperature"]),
    ("analysis.signs=maybe", ["analysis.signs must be true or false", "'maybe'"]),
    ("analysis.foo=1", ["unknown key 'analysis.foo'", "signs"]),
    # aimed at the finished run itself
    ("out_dir={run} seed=x", ["seed must be an integer", "'x'"]),
    ("out_dir={run}", ["already holds a run", "resume=true"]),
    ("resume=maybe out_dir={run}", ["resume must be true or false", "'maybe'"]),
    ("resume=true out_dir={run} epochs=abc", ["epochs must be an integer", "'abc'"]),
    ("resume=true out_dir={run} method.lr=-1", ["method.lr must be > 0", "-1"]),
    ("resume=true out_dir={run} method=fp", ["cannot resume with a different config"]),
]


def arguments(case: str, run: Path, fresh: Path) -> list[str]:
    args = case.replace("{run}", str(run)).split(" ")
    return args if "out_dir=" in case else [*args, f"out_dir={fresh}"]


@pytest.mark.parametrize("case, fragments", BAD_INPUTS, ids=[case for case, _ in BAD_INPUTS])
def test_bad_input_is_refused(run_cli, finished_run, tmp_path, case, fragments):
    before = snapshot(finished_run)
    code, output = run_cli("train", *arguments(case, finished_run, tmp_path / "run"))
    assert_one_line_error(code, output, *fragments)
    assert not (tmp_path / "run").exists()
    assert snapshot(finished_run) == before


REAL_CLI_CASES = ["seed=x", "batch_size=1.5", "model.hidden=[0]", "epochs=abc", "method.lr=inf",
                  "model.kernel_quantizer_args={clip:-1}", "resume=true out_dir={run} epochs=abc"]


@pytest.mark.parametrize("case", REAL_CLI_CASES)
def test_bad_input_is_refused_by_the_real_command(finished_run, tmp_path, case):
    """The issue's own examples, each as its own `bnnx train` process."""
    before = snapshot(finished_run)
    result = subprocess.run(BNNX + ["train", *arguments(case, finished_run, tmp_path / "run")],
                            capture_output=True, text=True, timeout=300)
    assert_one_line_error(result.returncode, result.stdout + result.stderr, *dict(BAD_INPUTS)[case])
    assert not (tmp_path / "run").exists()
    assert snapshot(finished_run) == before


def test_a_valid_quantizer_composes(run_cli):
    code, output = run_cli("train", "--cfg", "job", "model.kernel_quantizer=ternary")
    assert code == 0 and "kernel_quantizer: ternary" in output


def test_out_dir_that_is_a_file(run_cli, tmp_path):
    target = tmp_path / "file"
    target.write_text("keep me")
    code, output = run_cli("train", f"out_dir={target}")
    assert_one_line_error(code, output, "is a file")
    assert target.read_text() == "keep me"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from bnnx.config.compose import compose_config
    from bnnx.train.loop import train

    run = tmp_path_factory.mktemp("finished") / "run"
    train(compose_config(["epochs=1", "model.hidden=[16]", f"out_dir={run}"]))
    return run


def test_resume_with_nothing_to_resume(run_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    code, output = run_cli("train", "resume=true", f"out_dir={tmp_path / 'empty'}")
    assert_one_line_error(code, output, "nothing to resume")


def test_resume_with_missing_checkpoint(run_cli, finished_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    shutil.rmtree(copy / "checkpoints")
    before = snapshot(copy)
    code, output = run_cli("train", "resume=true", f"out_dir={copy}")
    assert_one_line_error(code, output, "no checkpoint to resume")
    assert snapshot(copy) == before


def test_resume_with_corrupt_checkpoint(finished_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    for path in (copy / "checkpoints").rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(b"\x00garbage" * 7)
    before = snapshot(copy)
    result = subprocess.run(
        BNNX + ["train", "resume=true", f"out_dir={copy}"], capture_output=True, text=True, timeout=300
    )
    assert_one_line_error(result.returncode, result.stdout + result.stderr, "corrupt or incompatible")
    assert snapshot(copy) == before
