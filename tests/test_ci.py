"""The test commands agree: CI's first step is exactly the README's test command, whose
selection is the default one of `pyproject.toml` (what a plain `pytest` runs), and
CI's second step runs every test that selection leaves out."""

import pathlib
import re
import shlex
import sys


if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


ROOT = pathlib.Path(__file__).parents[1]


def _marker_expression(command: str) -> str:
    """The `-m EXPRESSION` of a pytest command line (after `python -m pytest`)."""
    words = shlex.split(command)
    words = words[words.index("pytest") + 1 :] if "pytest" in words else words
    return words[words.index("-m") + 1]


def test_ci_runs_the_readme_test_command_and_then_what_it_leaves_out():
    readme = (ROOT / "README.md").read_text()
    start = 'pip install -e ".[test]"'
    (command,) = [line for line in readme.splitlines() if line.startswith(start)]
    ci = (ROOT / ".ci" / "run").read_text()
    # CI wraps pytest to fail on an empty selection; the command is otherwise the same.
    assert command.replace("python -m pytest", "run_pytest python -m pytest") in ci
    selection = _marker_expression(command.split(" && ")[-1])
    assert selection == "not slow and not e2e"
    pytest_settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    options = pytest_settings["ini_options"]
    assert _marker_expression(options["addopts"]) == selection
    assert sorted(m.split(":")[0] for m in options["markers"]) == ["e2e", "slow"]
    (second,) = re.findall(r"run_pytest (python -m pytest -m \"slow or e2e\" [^;]*);", ci)
    assert second == 'python -m pytest -m "slow or e2e" -n 2 --dist loadfile'
