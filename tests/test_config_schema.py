"""The config schema (bnnx.config.schema): every key's type, default and range, checked the same way
for the CLI and the Python API; the YAML options state only what differs from their classes' defaults."""

import dataclasses
import math
import re
from pathlib import Path
from typing import Sequence

import pytest
import yaml

from bnnx.config import AnalysisConfig, DistillConfig, LoggerConfig, TrainConfig
from bnnx.config.schema import check_value, check_values, describe, is_checked, limits, setting, type_hints, validate
from bnnx.data import DatasetConfig, ShapesConfig, dataset_class
from bnnx.errors import ConfigError
from bnnx.methods.bmd import BMD
from bnnx.methods.bnew import BNEW
from bnnx.methods.bop import Bop
from bnnx.methods.ilb import ILB
from bnnx.methods.ste import STE
from bnnx.models import ModelConfig
from bnnx.quantizers import SignSTE, make_quantizer

CONF = Path(__file__).resolve().parents[1] / "conf"


@dataclasses.dataclass(frozen=True)
class Toy:
    count: int = setting(1, ge=1)
    rate: float = setting(0.5, gt=0, le=1)
    flag: bool = False
    mode: str = setting("a", choices=("a", "b"))
    size: int | None = setting(None, ge=1)
    widths: Sequence[int] = setting((4, 4), ge=1)
    pair: tuple[float, ...] = setting((0.5, 0.5), ge=0, length=2)
    path: str | None = None
    extra: dict | None = None

    def __post_init__(self):
        validate(self, "toy")


@dataclasses.dataclass(frozen=True)
class ToyChild(Toy):
    count: int = 5  # redeclared with a plain default: keeps Toy's range


def test_valid_values_pass_and_sequences_become_tuples():
    toy = Toy(count=3, rate=1, flag=True, mode="b", size=2, widths=[1, 2, 3], pair=[0, 1.0], path="p", extra={"k": 1})
    assert (toy.count, toy.rate, toy.widths, toy.pair, toy.extra) == (3, 1, (1, 2, 3), (0, 1.0), {"k": 1})
    assert Toy(size=None, path=None, extra=None).size is None


@pytest.mark.parametrize("changes, message", [
    ({"count": "x"}, "toy.count must be an integer (got 'x')"),
    ({"count": 1.5}, "toy.count must be an integer (got 1.5)"),
    ({"count": True}, "toy.count must be an integer (got true)"),
    ({"count": 0}, "toy.count must be >= 1 (got 0)"),
    ({"rate": float("inf")}, "toy.rate must be a finite number (got inf)"),
    ({"rate": float("nan")}, "toy.rate must be a finite number (got nan)"),
    ({"rate": "0.1"}, "toy.rate must be a finite number (got '0.1')"),
    ({"rate": 0}, "toy.rate must be in (0, 1] (got 0)"),
    ({"rate": 1.5}, "toy.rate must be in (0, 1] (got 1.5)"),
    ({"flag": "yes"}, "toy.flag must be true or false (got 'yes')"),
    ({"flag": 1}, "toy.flag must be true or false (got 1)"),
    ({"mode": "c"}, "toy.mode must be one of a, b (got 'c')"),
    ({"mode": 3}, "toy.mode must be one of a, b (got 3)"),
    ({"size": 0}, "toy.size must be >= 1 (got 0)"),
    ({"size": "big"}, "toy.size must be an integer or null (got 'big')"),
    ({"widths": 4}, "toy.widths must be a list of integers (got 4)"),
    ({"widths": "44"}, "toy.widths must be a list of integers (got '44')"),
    ({"widths": [4, 0]}, "toy.widths[1] must be >= 1 (got 0)"),
    ({"widths": [4, 2.5]}, "toy.widths[1] must be an integer (got 2.5)"),
    ({"pair": [0.5]}, "toy.pair must be a list of 2 finite numbers (got [0.5])"),
    ({"pair": [0.5, -1]}, "toy.pair[1] must be >= 0 (got -1)"),
    ({"path": 7}, "toy.path must be a string or null (got 7)"),
    ({"extra": [1]}, "toy.extra must be a mapping or null (got [1])"),
])
def test_bad_values_name_the_key_the_value_and_what_is_expected(changes, message):
    with pytest.raises(ConfigError) as error:
        Toy(**changes)
    assert str(error.value) == message


def test_a_redeclared_field_keeps_its_base_range():
    assert ToyChild().count == 5 and limits(ToyChild, "count") == {"ge": 1}
    with pytest.raises(ConfigError, match=r"toy.count must be >= 1 \(got 0\)"):
        ToyChild(count=0)


def test_check_values_lists_the_valid_keys():
    assert check_values(Toy, {"widths": [2]}, "x") == {"widths": (2,)}
    with pytest.raises(ConfigError, match="unknown key 'x.widht'; valid keys: count, extra, flag, mode, pair, path"):
        check_values(Toy, {"widht": 3}, "x")


def test_ranges_read_as_intervals():
    assert [
        describe(r) for r in ({"gt": 0}, {"ge": 1}, {"ge": 0, "lt": 1}, {"gt": 0, "le": 1.5}, {"choices": ("x",)})
    ] == ["> 0", ">= 1", "in [0, 1)", "in (0, 1.5]", "x"]
    assert check_value("k", 2, int, {"ge": 0, "lt": 2**32}) == 2


# ---- every class of the typed config is held to its annotations ---------------------------

def config_classes():
    from bnnx.methods import METHODS, method_class
    from bnnx.models import FIXED, MODELS, model_class
    from bnnx.quantizers import QUANTIZERS

    classes = [(c, ()) for c in (TrainConfig, DistillConfig, AnalysisConfig, DatasetConfig, ShapesConfig, ModelConfig)]
    classes += [(method_class(name), ()) for name in METHODS]
    classes += [(model_class(name), FIXED) for name in MODELS]
    return classes + [(q, ()) for q in QUANTIZERS.values()]


def test_every_config_field_has_an_annotation_the_schema_checks():
    unchecked = [f"{cls.__name__}.{f.name}: {type_hints(cls).get(f.name)}" for cls, skip in config_classes()
                 for f in dataclasses.fields(cls) if f.name not in skip and not is_checked(type_hints(cls).get(f.name))]
    assert unchecked == []


def test_every_numeric_field_declares_its_range():
    numeric = (int, float, int | None, float | None)
    missing = [f"{cls.__name__}.{f.name}" for cls, skip in config_classes() for f in dataclasses.fields(cls)
               if f.name not in skip and type_hints(cls).get(f.name) in numeric and not limits(cls, f.name)]
    assert missing == []


# ---- the Python API raises what the CLI prints ------------------------------------------

API_CASES = [
    (lambda: TrainConfig(method=STE(), seed="x"), "seed must be an integer (got 'x')"),
    (lambda: TrainConfig(method=STE(), epochs=2.0), "epochs must be an integer (got 2.0)"),
    (lambda: TrainConfig(method="ste"), "method must be a MethodConfig (got 'ste')"),
    (lambda: STE(lr=math.nan), "method.lr must be a finite number (got nan)"),
    (lambda: ILB(lr=-1), "method.lr must be > 0 (got -1)"),
    (lambda: BMD(beta_every=1.5), "method.beta_every must be an integer (got 1.5)"),
    (lambda: Bop(gamma_horizon=True), "method.gamma_horizon must be a finite number (got true)"),
    (lambda: BNEW(stages=(0.5, 0.5)), "method.stages must be a list of 4 finite numbers (got (0.5, 0.5))"),
    (lambda: ModelConfig(options={"hidden": [0]}), "model.hidden[0] must be >= 1 (got 0)"),
    (lambda: ModelConfig(kernel_quantizer_args={"clip": -1}), "model.kernel_quantizer_args.clip must be > 0 (got -1)"),
    (
        lambda: ModelConfig(name="resnet20", options={"cifar_stem": "no"}),
        "model.cifar_stem must be true or false (got 'no')",
    ),
    (lambda: DatasetConfig(subset=0), "dataset.subset must be >= 1 (got 0)"),
    (lambda: DistillConfig(alpha=1.5), "distill.alpha must be in [0, 1] (got 1.5)"),
    (lambda: AnalysisConfig(signs="yes"), "analysis.signs must be true or false (got 'yes')"),
    (lambda: make_quantizer("sign_ste", clip=-1), "quantizer.sign_ste.clip must be > 0 (got -1)"),
    (lambda: SignSTE(clip=math.inf), "quantizer.sign_ste.clip must be a finite number or null (got inf)"),
]


@pytest.mark.parametrize("build, message", API_CASES, ids=[message.split(" ")[0] for _, message in API_CASES])
def test_python_api_gets_the_same_checks(build, message):
    with pytest.raises(ConfigError) as error:
        build()
    assert str(error.value) == message


def test_python_api_sequences_are_stored_as_tuples():
    model = ModelConfig(options={"hidden": [8]}, real_roles=["first"])
    assert model.options == {"hidden": (8,)} and model.real_roles == ("first",)
    assert ILB(initial_binary=["Dense_1"]).initial_binary == ("Dense_1",)


# ---- one source of defaults: the dataclasses; a YAML option states only what differs ---------

NEEDS = {"external": ["model.target=tests.models_external:SmallNet"],  # a class to binarize
         "shapes": ["dataset.input_shape=[24,24,3]", "dataset.num_classes=7"]}  # the shapes it stands for


def load_yaml(path: Path) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path))


def defaults_of(cls, skip=()) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.name not in skip:
            value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out[f.name] = defaults_of(type(value)) if dataclasses.is_dataclass(value) else value
    return out


def lists(value):
    if isinstance(value, dict):
        return {k: lists(v) for k, v in value.items()}
    return [lists(v) for v in value] if isinstance(value, (list, tuple)) else value


def class_defaults(group: str, option: str) -> dict:
    """The option's defaults read off its dataclass (and, for a model, its flax module)."""
    from bnnx.methods import method_class
    from bnnx.models import model_options

    if group == "method":
        return {**defaults_of(method_class(option)), "name": option}
    if group == "model" and option == "external":
        return {**defaults_of(ModelConfig), "name": option}
    if group == "model":
        return {**defaults_of(ModelConfig, ("options", "target", "rules")), **model_options(option), "name": option}
    return {**defaults_of(dataset_class(option) if group == "dataset" else LoggerConfig), "name": option}


@pytest.mark.parametrize("group", ["method", "model", "dataset", "logger"])
def test_an_option_composes_to_its_class_defaults_plus_exactly_its_yaml(group):
    from bnnx.config.compose import compose_dict

    for path in sorted((CONF / group).glob("*.yaml")):
        own = load_yaml(path)
        assert own.pop("defaults") == [f"base_{path.stem}", "_self_"], path.name
        defaults = lists(class_defaults(group, path.stem))
        restated = [k for k, v in own.items() if k in defaults and lists(v) == defaults[k]]
        assert not restated, f"{path.name} restates its class's defaults: {restated}"
        composed = compose_dict([f"{group}={path.stem}", *NEEDS.get(path.stem, [])])[group]
        needed = {key.split(".", 1)[1]: yaml.safe_load(value)
                  for key, _, value in (o.partition("=") for o in NEEDS.get(path.stem, []))}
        expected = {**defaults, **own, **needed}
        assert composed == expected, path.name


def test_the_top_level_composes_to_the_train_config_defaults():
    from bnnx.config.compose import compose_dict

    own = load_yaml(CONF / "config.yaml")
    assert set(own) == {"defaults"}  # every top-level key is TrainConfig's
    composed = compose_dict([])
    groups = ("method", "model", "dataset", "logger")
    assert {k: v for k, v in composed.items() if k not in groups} == lists(defaults_of(TrainConfig, groups))
    assert compose_dict(["epochs=3", "distill.alpha=0.25"])["epochs"] == 3


@pytest.mark.parametrize("group", ["method", "model", "dataset", "logger"])
def test_every_option_composes_into_a_valid_config(compose, group):
    for path in sorted((CONF / group).glob("*.yaml")):
        config = compose(f"{group}={path.stem}", *NEEDS.get(path.stem, []))
        assert getattr(config, group).name == path.stem


def test_the_shapes_option_states_its_shapes_and_round_trips(compose):
    from bnnx.config import config_from_dict, config_to_dict
    from bnnx.data import load_dataset, shape_only
    from bnnx.errors import DataNotFoundError

    config = compose("dataset=shapes", "dataset.input_shape=[24,24,3]", "dataset.num_classes=7")
    assert isinstance(config.dataset, ShapesConfig) and config.dataset.shapes() == ((24, 24, 3), 7)
    assert config_from_dict(config_to_dict(config)).dataset == config.dataset
    dataset = shape_only(config.dataset)
    assert (dataset.input_shape, dataset.num_classes) == ((24, 24, 3), 7)
    with pytest.raises(DataNotFoundError, match="training and evaluating need a data set"):
        load_dataset(config.dataset)


@pytest.mark.parametrize("overrides, words", [
    (["dataset=shapes"], "dataset=shapes needs dataset.input_shape"),
    (["dataset=shapes", "dataset.input_shape=[0,4]", "dataset.num_classes=3"], "dataset.input_shape[0] must be >= 1"),
    (["dataset=shapes", "dataset.input_shape=[4,4]", "dataset.num_classes=0"], "dataset.num_classes must be >= 1"),
    (["dataset=cifar10", "dataset.num_classes=3"], "unknown key 'dataset.num_classes'"),
])
def test_the_shapes_option_is_checked(compose, overrides, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        compose(*overrides)
