"""nbval (`make test-notebooks`) re-executes the committed notebooks of the quick chain. An appendix that only
larger profiles run (``"tl_course": {"profiles": ["full", "gpu"]}`` in its metadata, e.g. 08_more_strategies) has
no committed outputs to compare and would run for an hour at its defaults: it is not collected here (its code is
run by tests/test_transfer_notebooks.py at toy size)."""

from tl_core.course import profiles_of, runs_in_profile


def pytest_ignore_collect(collection_path, config):
    if collection_path.suffix != ".ipynb":
        return None
    try:
        profiles = profiles_of(collection_path)
    except (OSError, ValueError):
        return None  # nbval reports a notebook it cannot read
    return None if runs_in_profile(profiles, "quick") else True
