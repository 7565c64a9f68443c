import pytest

from server.runner.loader import LoadConfig, load_model


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    """The tiny model, loaded once per module (runners of their own: tests.support.runners.make_runner)."""
    return load_model(LoadConfig(tiny_model_dir))
