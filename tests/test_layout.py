"""The package layout: stage packages, the old flat names as aliases, a light top level."""

import importlib
import os
import subprocess
import sys

import pytest

import ttrl_jax
from ttrl_jax import _compat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# old top-level name -> where the module lives now (the documented mapping, spelled out)
OLD_TO_NEW = {
    "sampling": "ttrl_jax.rollout.sampling",
    "token_sampling": "ttrl_jax.rollout.token_sampling",
    "consensus": "ttrl_jax.rewards.consensus",
    "rl": "ttrl_jax.update.rl",
    "advantages": "ttrl_jax.update.advantages",
    "train_step": "ttrl_jax.update.train_step",
    "lm_head": "ttrl_jax.update.lm_head",
    "guard": "ttrl_jax.update.guard",
    "evaluation": "ttrl_jax.eval.evaluation",
    "eval_metrics": "ttrl_jax.eval.metrics",
    "memory": "ttrl_jax.planner.memory",
}

NEW_PACKAGES = ["rollout", "rewards", "update", "eval", "planner"]


def test_the_compat_table_is_the_documented_mapping():
    assert _compat.MOVED == OLD_TO_NEW


@pytest.mark.parametrize("old", sorted(OLD_TO_NEW))
def test_old_name_is_the_same_module_object(old):
    new = importlib.import_module(OLD_TO_NEW[old])
    # import ttrl_jax.<old>
    assert importlib.import_module(f"ttrl_jax.{old}") is new
    assert sys.modules[f"ttrl_jax.{old}"] is new
    # from ttrl_jax import <old>; ttrl_jax.<old>
    namespace = {}
    exec(f"from ttrl_jax import {old} as alias", namespace)  # noqa: S102 -- fixed names
    assert namespace["alias"] is new
    assert getattr(ttrl_jax, old) is new
    # the module still knows its real name and file
    assert new.__name__ == OLD_TO_NEW[old]
    assert new.__spec__.name == OLD_TO_NEW[old]
    assert os.path.dirname(new.__file__).endswith(OLD_TO_NEW[old].split(".")[1])


def test_patching_through_the_old_name_patches_the_new_module(monkeypatch):
    from ttrl_jax.update import guard

    marker = object()
    monkeypatch.setattr("ttrl_jax.guard.step_kl", marker)
    assert guard.step_kl is marker


def test_unknown_names_still_raise():
    with pytest.raises(AttributeError):
        ttrl_jax.no_such_module  # noqa: B018
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("ttrl_jax.no_such_module")


@pytest.mark.parametrize("name", NEW_PACKAGES)
def test_each_stage_package_says_what_it_owns(name):
    package = importlib.import_module(f"ttrl_jax.{name}")
    assert package.__doc__ and len(package.__doc__.split()) >= 20
    assert os.path.basename(package.__file__) == "__init__.py"
    for sub in package.__all__:  # lazy submodule access
        assert getattr(package, sub) is importlib.import_module(f"ttrl_jax.{name}.{sub}")


def test_flat_modules_left_the_top_level():
    top = {f[:-3] for f in os.listdir(os.path.dirname(ttrl_jax.__file__)) if f.endswith(".py")}
    assert top == {
        "__init__",
        "_compat",
        "checkpointing",
        "config",
        "metrics",
        "settings",
        "sharding",
        "trainer",
    }


def _fresh_modules(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_importing_the_package_imports_no_jax():
    heavy = ("jax", "jaxlib", "flax", "optax", "sympy", "math_verify", "numpy")
    code = (
        "import sys\n"
        "import ttrl_jax\n"
        f"print(' '.join(m for m in sys.modules if m.split('.')[0] in {heavy!r}))\n"
        "print(ttrl_jax.__file__)\n"
    )
    printed = _fresh_modules(code)
    assert printed == [os.path.join(REPO, "ttrl_jax", "__init__.py")]


def test_stage_packages_import_lazily():
    """Importing a stage package (as grading workers import ttrl_jax.rewards) loads none
    of its submodules, so no JAX."""
    code = (
        "import sys\n"
        "import ttrl_jax.rewards, ttrl_jax.rollout, ttrl_jax.update, ttrl_jax.eval\n"
        "import ttrl_jax.planner\n"
        "print(' '.join(m for m in sys.modules if m.split('.')[0] == 'jax') or 'none')\n"
    )
    assert _fresh_modules(code) == ["none"]


def test_readme_entry_points_exist():
    from ttrl_jax import models
    from ttrl_jax.rewards import grading

    for fn in (models.load_hf, models.logits, models.save_hf, grading.grade):
        assert callable(fn)
