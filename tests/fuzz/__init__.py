"""Coverage-guided fuzzing of the parsers that face the network or the disk.

Run with ``python -m tests.fuzz --list`` / ``NAME --runs N`` / ``all`` /
``NAME --replay`` (see docs/reliability.md).  This package imports nothing
from the project at import time: the harnesses are imported inside the
fuzzing process, under atheris' instrumentation, so coverage is measured.
"""

#: name -> "module:attribute" of a Harness.  Adding a parser's harness is
#: one line here and one function in a module.
HARNESSES = {
    "wire": "tests.fuzz.harnesses:WIRE",
    "jelly": "tests.fuzz.harnesses:JELLY",
    "config": "tests.fuzz.harnesses:CONFIG",
    "store-row": "tests.fuzz.harnesses:STORE_ROW",
    "scram": "tests.fuzz.harnesses:SCRAM",
    "twisted-wire": "tests.fuzz.twisted_harness:TWISTED_WIRE",
    "http": "tests.fuzz.service_harnesses:HTTP",
    "relay": "tests.fuzz.service_harnesses:RELAY",
    "irc": "tests.fuzz.service_harnesses:IRC",
    "smtp": "tests.fuzz.service_harnesses:SMTP",
    "smtp-data": "tests.fuzz.service_harnesses:SMTP_DATA",
    "maildir": "tests.fuzz.service_harnesses:MAILDIR",
    "pop3": "tests.fuzz.service_harnesses:POP3",
}

#: Packages whose code atheris instruments for coverage.
INSTRUMENTED = ("jelly", "broker", "cred", "services", "msgpack")

#: Harnesses that instrument only their parser's modules (and the libraries
#: doing the parsing): instrumenting all of ``services`` costs seconds of
#: start-up per run, and coverage outside the parser means little.
FOCUS = {
    "http": ("services.web._http", "services.web._core"),
    "relay": ("services.web._relay", "jelly"),
    "irc": ("services.words._irc", "services.words._irc_wire", "services.words._core"),
    "smtp": ("services.mail._smtp", "services.mail._core"),
    "smtp-data": ("services.mail._data",),
    "maildir": ("services.mail._maildir",),
    "pop3": ("services.mail._pop3",),
}
