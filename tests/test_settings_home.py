"""Every setting has one home: the YAML under conf/model holds every value a run uses (it is what gan.run composes
and records); a signature keeps a default only for a key that some model config leaves out.

Every model config is composed, and the class it builds and every nested object it builds (networks, by `_target_`,
and the architectures gan.nets.arch picks by name) are read against their signatures, through the **kwargs chain of
their bases as gan.train.accepted_keys walks it. A signature default is the home of a value only for the configs that
leave the key out; where every config that reaches it sets the key, the default is a second source of truth: either
it differs from the YAML (a drift: runs use the YAML value) or it restates it. The run settings every model shares
(log_every, seed, compile, channels_last) are set in conf/model/_run.yaml only."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from conftest import CONF, REPO
from gan.nets.arch import DISCRIMINATORS, GENERATORS

MODEL_DIR = CONF / "model"
MODELS = sorted(path.stem for path in MODEL_DIR.glob("*.yaml") if not path.stem.startswith("_"))
RUN_FILE = "_run"  # the run settings every model shares
HYDRA_KEYS = {"_target_", "_partial_", "_args_", "_convert_", "_recursive_"}
# gan.nets.arch builds G and D by name: an architecture's own settings (model.generator.dcgan.width, ...) go to that
# architecture's class; each architecture's entry is checked, as each is used once model.arch selects it.
BY_NAME = {"gan.nets.arch.generator": GENERATORS, "gan.nets.arch.discriminator": DISCRIMINATORS}
LEFT_OUT = object()  # the config does not set the key: the signature's default is used


def raw(name: str) -> dict:
    return yaml.safe_load((MODEL_DIR / f"{name}.yaml").read_text()) or {}


def includes(name: str) -> list[tuple[str, str]]:
    """(file, package) of the config files conf/model/<name>.yaml is composed from, in composition order (later
    files win); package is the key path under `model` where the file's content lands (`_text_generator@generator`)."""
    def walk(file: str, package: str) -> list[tuple[str, str]]:
        entries = raw(file).get("defaults") or []
        order = []
        for entry in entries if "_self_" in entries else [*entries, "_self_"]:
            if entry == "_self_":
                order.append((file, package))
            elif isinstance(entry, str):
                included, _, at = entry.partition("@")
                order += walk(included, ".".join(part for part in (package, at) if part))
        return order
    return walk(name, "")


def defining_file(model: str, path: str) -> str:
    """The file whose value of model.<path> wins in the composition of conf/model/<model>.yaml."""
    found = f"conf/model/{model}.yaml"
    for file, package in includes(model):
        keys, prefix = path.split("."), package.split(".") if package else []
        if keys[:len(prefix)] != prefix:
            continue
        node = raw(file)
        for key in keys[len(prefix):]:
            if not isinstance(node, dict) or key not in node:
                break
            node = node[key]
        else:
            found = f"conf/model/{file}.yaml"
    return found


def composed(model: str) -> DictConfig:
    """The model group alone, as every run composes it (no data, no scale preset), interpolations unresolved."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(overrides=[f"+model={model}"]).model


def named(function) -> dict[str, inspect.Parameter]:
    return {p.name: p for p in inspect.signature(function).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}


def signature_chain(target) -> list[tuple[object, dict[str, inspect.Parameter]]]:
    """(owner, its named parameters): a class's __init__ and those of the bases it passes **kwargs on to, as
    gan.train.accepted_keys walks them; a function alone."""
    if not isinstance(target, type):
        return [(target, named(target))]
    chain = []
    for owner in target.__mro__:
        if "__init__" in vars(owner):
            chain.append((owner, named(owner.__init__)))
            if not any(p.kind == p.VAR_KEYWORD for p in inspect.signature(owner.__init__).parameters.values()):
                break
    return chain


class Interpolation(str):
    """A value the YAML sets by ${...}: the key is set, its value comes from elsewhere (the run, the data)."""


@dataclass
class Built:
    """One object a model config builds: where its settings sit, what builds it, the settings it is given."""
    path: str  # "" for the model itself, else e.g. "generator" or "generator.dcgan"
    target: object
    values: dict  # key -> the YAML's value (an Interpolation where it is ${...})


def settings(node: DictConfig) -> dict:
    values = {}
    for key in node:
        if key in HYDRA_KEYS:
            continue
        if OmegaConf.is_interpolation(node, key):
            values[key] = Interpolation(node._get_node(key)._value())
        else:
            child = node[key]
            values[key] = OmegaConf.to_container(child) if isinstance(child, (DictConfig, ListConfig)) else child
    return values


def built(node: DictConfig, path: str = "") -> list[Built]:
    """The gan objects a config node builds, itself and nested ones. Third-party targets (torch.optim) are left
    out: a YAML value there chooses against a library's default, it does not copy one of ours."""
    found = []
    target = node.get("_target_")
    if isinstance(target, str) and target.startswith("gan."):
        values = settings(node)
        found.append(Built(path, get_object(target), values))
        for name, cls in BY_NAME.get(target, {}).items():
            found.append(Built(f"{path}.{name}", cls, dict(values.get(name) or {})))
    for key in node:
        if key not in HYDRA_KEYS and not OmegaConf.is_interpolation(node, key) and isinstance(node[key], DictConfig):
            found += built(node[key], f"{path}.{key}".lstrip("."))
    return found


@dataclass
class Use:
    model: str
    key: str  # the full YAML key, e.g. model.generator.width
    value: object  # the YAML's value (an Interpolation where it is ${...}) or LEFT_OUT

    def __str__(self) -> str:
        value = str(self.value) if isinstance(self.value, Interpolation) else repr(self.value)
        return f"{self.key}: {value} in {defining_file(self.model, self.key.removeprefix('model.'))}"


def uses_of_defaults() -> dict[tuple[object, str], list[Use]]:
    """(owner, parameter with a default) -> its uses over all model configs: each config whose built object has
    the owner on its chain and sets the key (also where a subclass's parameter of that name shadows the owner's:
    a shadowed default is a dead copy), and each config that leaves the key out where the owner receives it."""
    uses: dict[tuple[object, str], list[Use]] = {}
    for model in MODELS:
        for item in built(composed(model)):
            seen: set[str] = set()
            for owner, parameters in signature_chain(item.target):
                for key, parameter in parameters.items():
                    first = key not in seen
                    seen.add(key)
                    if parameter.default is inspect.Parameter.empty or (key not in item.values and not first):
                        continue
                    uses.setdefault((owner, key), []).append(
                        Use(model, f"model.{item.path}.{key}".replace("..", "."), item.values.get(key, LEFT_OUT)))
    return uses


def where(owner) -> str:
    return str(Path(inspect.getsourcefile(owner)).resolve().relative_to(REPO))


def same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
        return a == b
    return type(a) is type(b) and a == b


def second_sources() -> list[str]:
    problems = []
    for (owner, key), uses in uses_of_defaults().items():
        if any(use.value is LEFT_OUT for use in uses):
            continue  # the default is the home of the value for the configs that leave the key out
        default = named(owner.__init__ if isinstance(owner, type) else owner)[key].default
        signature = f"{owner.__module__}.{owner.__qualname__}({key}={default!r}) in {where(owner)}"
        drifts = [use for use in uses if not isinstance(use.value, Interpolation) and not same(default, use.value)]
        problems += [f"{signature} differs from {use}. Runs use the YAML value: remove the default." for use in drifts]
        if not drifts:
            settings = "; ".join(sorted(set(map(str, uses))))
            problems.append(f"{signature} restates what every config that builds it sets ({settings}). The YAML is "
                            f"the value's home: remove the default.")
    return list(dict.fromkeys(problems))


def test_no_signature_default_is_a_second_source_of_a_yaml_value():
    problems = second_sources()
    assert not problems, "\n".join(problems)


def run_keys() -> list[str]:
    return [key for key in raw(RUN_FILE) if key != "defaults"]


@pytest.mark.parametrize("model", MODELS)
def test_the_shared_run_settings_have_one_file(model):
    files = [file for file, _ in includes(model)]
    assert RUN_FILE in files, (f"conf/model/{model}.yaml does not include conf/model/{RUN_FILE}.yaml (directly or "
                               f"through _common.yaml): add `- {RUN_FILE}` to its defaults list.")
    restating = {f"conf/model/{file}.yaml": sorted(set(raw(file)) & set(run_keys()))
                 for file in files if file != RUN_FILE and set(raw(file)) & set(run_keys())}
    assert not restating, (f"{restating} restate run settings that conf/model/{RUN_FILE}.yaml holds for every model: "
                           f"remove them there (a preset or the command line overrides them).")
    assert {"log_every", "seed", "compile", "channels_last"} <= set(run_keys())
