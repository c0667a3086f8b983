"""The mail package's public names."""

import services.mail


def test_the_public_names_are_pinned():
    assert sorted(services.mail.__all__) == sorted([
        "SERVICE_NAME", "Address", "AddressError", "Domain", "MailCore", "MailError", "MailPerspective",
        "MailPlugin", "MailService", "Maildir", "MaildirError", "MessageInfo", "parse_address", "plugin",
    ])
    for name in services.mail.__all__:
        assert hasattr(services.mail, name), name


def test_the_plugin_is_found_through_its_entry_point():
    from services import get_plugin

    assert get_plugin("mail") is services.mail.plugin
