"""The public surface of the jelly package."""

import jelly


def test_all_is_pinned():
    assert sorted(jelly.__all__) == sorted([
        "DEFAULT_LIMITS", "MAX_REFERENCE_KIND", "Copyable", "DecodeError", "EncodeError",
        "Flavored", "InsecureJelly", "JellyContext", "JellyError", "Limits", "LimitExceeded",
        "Registry", "RemoteCopy", "default_registry", "dumps", "loads", "register_copy",
        "unregister_copy",
    ])
    for name in jelly.__all__:
        assert hasattr(jelly, name)


def test_max_reference_kind_is_15():
    assert jelly.MAX_REFERENCE_KIND == 15


def test_dumps_returns_bytes():
    assert type(jelly.dumps([1, (2,)])) is bytes


def test_jelly_imports_no_other_project_package():
    import subprocess
    import sys

    code = (
        "import sys, jelly; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('broker', 'cred', 'services', 'clients')]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True)
    assert out.stdout.strip() == "[]"


def test_no_dangerous_builtins_in_the_jelly_sources():
    import pathlib
    import re

    source = "\n".join(p.read_text() for p in pathlib.Path(jelly.__file__).parent.glob("*.py"))
    for pattern in [r"\bpickle\b", r"\bmarshal\b", r"\beval\(", r"\bexec\(", r"\bimportlib\b",
                    r"__import__", r"import_module"]:
        assert not re.search(pattern, source), pattern
