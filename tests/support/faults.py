"""Fault injection for tests: swap one of the real model runner's steps for a wrapper around it."""

from collections.abc import Callable
from contextlib import contextmanager


@contextmanager
def replaced(runner, name: str, fake: Callable):
    """For the block, `runner.<name>(*args)` calls `fake(real_step, *args)`."""
    real = getattr(runner, name)
    setattr(runner, name, lambda *args: fake(real, *args))
    try:
        yield
    finally:
        setattr(runner, name, real)


def fails_once(error: Exception) -> Callable:
    """A fake step that raises `error` the first time and runs the real step after that."""
    raised = []

    def fake(real, *args):
        if not raised:
            raised.append(error)
            raise error
        return real(*args)

    return fake
