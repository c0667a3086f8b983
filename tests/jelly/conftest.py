import pytest

import jelly


@pytest.fixture
def registry() -> jelly.Registry:
    """A fresh registry, so tests never depend on each other's registrations."""
    return jelly.Registry()
