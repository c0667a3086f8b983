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
}

#: Packages whose code atheris instruments for coverage.
INSTRUMENTED = ("jelly", "broker", "cred", "services", "msgpack")
