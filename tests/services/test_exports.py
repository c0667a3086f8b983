"""The public surface of ``services`` is pinned here."""

import services


def test_the_services_package_exports_exactly_its_public_names():
    assert sorted(services.__all__) == sorted([
        "ENTRY_POINT_GROUP", "EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE",
        "EXTRA_PLUGINS_ENV", "LOG_LEVELS", "Application", "ConfigError", "IService",
        "IServicePlugin", "MultiService", "PidfileError", "PluginError", "PluginInfo",
        "PluginLoadError", "PluginRegistry", "RunConfig", "Service", "ServiceBuildError",
        "ServiceError", "ServicePlugin", "ServiceSpec", "ServiceStartError",
        "ServiceStopError", "UnknownPluginError", "account_portal", "account_store",
        "available_plugins", "build_application", "configure_logging", "ensure_account",
        "ensure_service_name", "get_logger", "get_plugin", "load_config", "load_extra_plugins",
        "host_name", "load_plugin_spec", "options_from_table", "plugin_parser", "port_number",
        "register_plugin", "run", "run_application", "stop_serving", "unregister_plugin",
        "PortalService", "non_negative_seconds", "option_type", "add_listen_arguments",
    ])
    for name in services.__all__:
        assert getattr(services, name) is not None


def test_the_framework_does_not_import_the_broker():
    # The framework runs any service, PB or not; it shares only cred's log
    # format (cred.log), so that every layer logs fields the same way.
    import subprocess
    import sys

    code = ("import sys, services; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'broker'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True)
    assert out.stdout.strip() == "[]"
