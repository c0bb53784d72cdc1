"""Console logging keeps working after the stream it started on is replaced and closed."""
import io
import logging
import sys

from common.console import ConsoleHandler, ensure_console_logging


def test_console_handler_writes_to_the_current_stream_after_the_old_one_is_closed(monkeypatch):
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    handler = ConsoleHandler("stderr")
    handler.setFormatter(logging.Formatter("%(message)s"))
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("one",), None)
    handler.emit(record)
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    handler.emit(logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("two",), None))
    assert second.getvalue() == "hello two\n"


def test_a_pinned_stream_is_used_until_the_current_one_is_set_again(monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    handler = ConsoleHandler("stdout")
    handler.setFormatter(logging.Formatter("%(message)s"))
    pinned = io.StringIO()
    handler.setStream(pinned)
    handler.emit(logging.LogRecord("x", logging.INFO, __file__, 1, "to the pin", (), None))
    handler.setStream(sys.stdout)
    handler.emit(logging.LogRecord("x", logging.INFO, __file__, 1, "to stdout", (), None))
    assert pinned.getvalue() == "to the pin\n"
    assert sys.stdout.getvalue() == "to stdout\n"


def test_ensure_console_logging_keeps_a_callers_handlers(monkeypatch):
    root = logging.getLogger()
    own = logging.NullHandler()
    monkeypatch.setattr(root, "handlers", [own])
    ensure_console_logging()
    assert root.handlers == [own]
    monkeypatch.setattr(root, "handlers", [])
    ensure_console_logging()
    assert len(root.handlers) == 1 and isinstance(root.handlers[0], ConsoleHandler)
