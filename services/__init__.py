"""The application framework: services, the application, plug-ins and the runner.

``Service``/``MultiService``/``Application`` are the tree of things a server
process starts and stops; plug-ins (``ServicePlugin``, found through the
``perspective_broker.services`` entry points or :func:`register_plugin`)
build services from options; :func:`run` runs a :class:`RunConfig` in the
foreground as ``pb run`` does; :func:`account_portal` and its helpers give
the services that log accounts in one portal over the application's account
store.  See ``docs/running.md`` and ``docs/plugins.md``.
"""

from ._accounts import (
    account_portal,
    account_store,
    ensure_account,
    ensure_service_name,
    stop_serving,
)
from ._application import Application
from ._config import ConfigError, RunConfig, ServiceSpec, load_config, options_from_table
from ._logging import LOG_LEVELS, configure_logging, get_logger
from ._options import (
    add_listen_arguments,
    host_name,
    non_negative_seconds,
    option_type,
    port_number,
)
from ._portal_service import PortalService
from ._plugins import (
    ENTRY_POINT_GROUP,
    EXTRA_PLUGINS_ENV,
    IServicePlugin,
    PluginError,
    PluginInfo,
    PluginLoadError,
    PluginRegistry,
    ServiceBuildError,
    ServicePlugin,
    UnknownPluginError,
    available_plugins,
    get_plugin,
    load_extra_plugins,
    load_plugin_spec,
    plugin_parser,
    register_plugin,
    unregister_plugin,
)
from ._runner import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PidfileError,
    build_application,
    run,
    run_application,
)
from ._service import (
    IService,
    MultiService,
    Service,
    ServiceError,
    ServiceStartError,
    ServiceStopError,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXTRA_PLUGINS_ENV",
    "LOG_LEVELS",
    "Application",
    "PortalService",
    "ConfigError",
    "IService",
    "IServicePlugin",
    "MultiService",
    "PidfileError",
    "PluginError",
    "PluginInfo",
    "PluginLoadError",
    "PluginRegistry",
    "RunConfig",
    "Service",
    "ServiceBuildError",
    "ServiceError",
    "ServicePlugin",
    "ServiceSpec",
    "ServiceStartError",
    "ServiceStopError",
    "UnknownPluginError",
    "account_portal",
    "account_store",
    "available_plugins",
    "build_application",
    "configure_logging",
    "ensure_account",
    "ensure_service_name",
    "stop_serving",
    "get_logger",
    "get_plugin",
    "load_config",
    "load_extra_plugins",
    "load_plugin_spec",
    "options_from_table",
    "plugin_parser",
    "port_number",
    "host_name",
    "non_negative_seconds",
    "option_type",
    "add_listen_arguments",
    "register_plugin",
    "run",
    "run_application",
    "unregister_plugin",
]
