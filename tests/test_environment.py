"""The pinned environment: requirements.txt and environment.yml must agree, and everything is pinned."""

import re

import yaml

from conftest import REPO


def requirement_pins(filename="requirements.txt"):
    pins = {}
    for line in (REPO / filename).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)==([\w.+\-]+)", line)
            assert match, f"{filename}: {line!r} is not pinned with =="
            pins[match.group(1).lower()] = match.group(2)
    return pins


def conda_pins():
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    pins = {}
    for line in pip_section:
        name, version = line.split("==")
        pins[name.lower()] = version
    return pins


def test_every_requirement_is_pinned():
    pins = requirement_pins()
    for package in ("torch", "gensim", "jupyterlab", "nbval", "papermill", "pybind11", "numpy"):
        assert package in pins, f"{package} is one of the course's named packages"


def test_the_environment_has_the_pinned_versions():
    """What runs the tests is what requirements.txt pins (a local build tag such as +cpu aside): the extension is
    compiled against this torch, and the README's figures were measured with these versions."""
    from importlib import metadata

    installed = {}
    for name in requirement_pins():
        try:
            installed[name] = metadata.version(re.sub(r"\[.*\]", "", name)).split("+")[0]
        except metadata.PackageNotFoundError:
            installed[name] = None
    assert installed == requirement_pins()


def test_environment_yml_has_the_same_pins():
    assert conda_pins() == requirement_pins()


def test_torch_is_not_a_build_requirement():
    """Build isolation would compile the extension against another torch than the installed one."""
    pyproject = (REPO / "pyproject.toml").read_text()
    build_system = pyproject.split("[build-system]", 1)[1].split("\n[", 1)[0]
    assert "torch" not in build_system


def test_the_classroom_requirements_are_pinned_and_leave_the_course_pins_alone():
    """requirements-classroom.txt (nbgrader, the website, the browser test) is installed into .venv with
    requirements.txt as constraints: each line pinned, and none of the course's own packages named again."""
    course = requirement_pins()
    pins = requirement_pins("requirements-classroom.txt")
    assert {"nbgrader", "sphinx", "myst-nb", "sphinx-book-theme", "playwright"} <= set(pins)
    assert not set(pins) & set(course), "a course package is pinned in requirements.txt only"
