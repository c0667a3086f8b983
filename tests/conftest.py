"""Suite-wide settings: every test has a timeout (pyproject), warnings about
leaked transports or destroyed tasks are errors, and asyncio debug mode is on
so that never-awaited coroutines are reported."""

import os

os.environ.setdefault("PYTHONASYNCIODEBUG", "1")
