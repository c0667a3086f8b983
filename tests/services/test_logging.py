"""Structured log lines: ``TIME LEVEL logger: message key=value``."""

from __future__ import annotations

import io
import logging
import re

import pytest

from services import configure_logging, get_logger

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (?P<rest>.*)$")


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def test_records_are_one_line_with_fields(restore_root_logger):
    stream = io.StringIO()
    configure_logging("info", stream=stream)
    log = get_logger("pb.run")
    log.info("started", services="echo,manhole")
    log.warning("odd value", text="two words", quote='say "hi"', empty="", n=3)
    log.debug("not shown")
    logging.getLogger("asyncio").error("plain %s", "record")
    lines = [LINE.match(line)["rest"] for line in stream.getvalue().splitlines()]
    assert lines == [
        "INFO pb.run: started services=echo,manhole",
        'WARNING pb.run: odd value text="two words" quote="say \\"hi\\"" empty="" n=3',
        "ERROR asyncio: plain record",
    ]


def test_a_log_file_gets_everything_and_stderr_still_gets_errors(tmp_path, restore_root_logger):
    stream = io.StringIO()
    configure_logging("debug", log_file=tmp_path / "pb.log", stream=stream)
    log = get_logger("pb.test")
    log.debug("detail", k=1)
    log.error("broken", k=2)
    for handler in logging.getLogger().handlers:
        handler.flush()
    written = (tmp_path / "pb.log").read_text()
    assert "DEBUG pb.test: detail k=1" in written and "ERROR pb.test: broken k=2" in written
    assert "detail" not in stream.getvalue()
    assert "ERROR pb.test: broken k=2" in stream.getvalue()
    configure_logging("info", stream=io.StringIO())  # closes the file handler


def test_an_unknown_level_is_refused():
    with pytest.raises(ValueError, match="expected one of debug, info, warning, error"):
        configure_logging("loud")
