"""The routing core: address syntax, domains, relay policy."""

from __future__ import annotations

import pytest

from services.mail import AddressError, Domain, MailCore, parse_address
from services.mail._core import Local, Refuse, Relay, check_mailbox_name, received_header


def core(**kwargs) -> MailCore:
    c = MailCore(**kwargs)
    c.add_domain(Domain("example.com", "/x/example.com"))
    c.add_domain(Domain("example.org", "/x/example.org", catch_all="postmaster"))
    c.mailboxes = {"alice@example.com", "postmaster@example.org"}
    return c


@pytest.mark.parametrize("text", ["a@b.c", "first.last+tag@example.com", "x_y-z@sub.example.co.uk"])
def test_ordinary_addresses_parse(text):
    assert str(parse_address(text)) == text.lower() if text.islower() else True


@pytest.mark.parametrize("text", ['"q"@example.com', "a%b@example.com", "a!b@example.com", "a@b@c",
                                  "@a:b@c", "a..b@c", ".a@c", "a.@c", "a@[1.2.3.4]", "a b@c", "a@-x.com",
                                  "", "a" * 65 + "@c", "a@" + "b" * 64 + ".com", "jörg@c"])
def test_tricky_addresses_are_refused(text):
    with pytest.raises(AddressError):
        parse_address(text)


def test_utf8_local_parts_need_smtputf8_and_domains_are_idna():
    assert parse_address("jörg@bücher.example", utf8=True).domain == "xn--bcher-kva.example"


def test_routing_local_unknown_catch_all_and_relay():
    c = core()
    assert isinstance(c.route("ALICE@Example.COM", authenticated=False), Local)
    assert c.route("bob@example.com", authenticated=False).reply.startswith("550 5.1.1")
    caught = c.route("anyone@example.org", authenticated=False)
    assert isinstance(caught, Local) and caught.mailbox == "postmaster@example.org"
    assert c.route("x@elsewhere.test", authenticated=False).reply.startswith("554 5.7.1")
    assert c.route("x@elsewhere.test", authenticated=True).reply.startswith("550 5.7.1")
    c.smarthost = ("127.0.0.1", 25)
    assert isinstance(c.route("x@elsewhere.test", authenticated=True), Relay)
    assert isinstance(c.route("x@elsewhere.test", authenticated=False), Refuse)


def test_mailbox_names_may_not_walk_directories():
    for bad in ("a/b@example.com", ".x@example.com"):
        with pytest.raises(AddressError):
            check_mailbox_name(bad)


def test_the_received_header_keeps_only_printable_helo_text():
    header = received_header(helo="evil\r\nX-Injected: yes", peer="127.0.0.1", hostname="mx",
                             protocol="ESMTP", recipient="a@b", queue_id="q1", when=0)
    assert header.count(b"\n") == 4 and b"\r" not in header
    assert header.startswith(b"Received: from evilX-Injected:yes ([127.0.0.1])\n\tby mx with ESMTP id q1")
