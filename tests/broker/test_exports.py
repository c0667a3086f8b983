"""The public surface of ``broker`` is pinned here, as for the other packages."""

import broker


def test_the_broker_package_exports_exactly_its_public_names():
    assert sorted(broker.__all__) == sorted([
        "serve", "connect", "login", "login_anonymous", "reconnecting", "Reconnecting",
        "Server", "Connection", "Referenceable", "Root", "Perspective", "Viewable",
        "RemoteReference", "call_many", "call_many_only", "Cacheable", "RemoteCache",
        "RemoteCacheObserver",
        "register_cache", "unregister_cache", "RemoteStream", "stream_bytes", "stream_file",
        "collect", "expected_errors", "in_thread", "use_thread_pool", "Limits",
        "DEFAULT_LIMITS", "PBError", "ConnectionLost", "DeadReference", "RemoteError",
        "NoSuchMethod", "CallTimeout", "ProtocolError", "InsecureJelly", "LimitExceeded",
        "Unauthorized", "LocalProtocolError", "RemoteProtocolError",
    ])
    for name in broker.__all__:
        assert getattr(broker, name) is not None
