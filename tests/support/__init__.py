"""Scaffolding shared by tests/ and bench/: ports, environment, nginx, emulator clusters,
the proxy (in a thread or as ``cached-tei serve``), Prometheus and load generators.

Each module has one job; import from the module that does it::

    from tests.support.cluster import EmulatorCluster
    from tests.support.env import scrubbed_environ
    from tests.support.load import closed_loop, run_wrk
    from tests.support.nginx import Nginx, nginx_binary, start_nginx
    from tests.support.prometheus import Prometheus, prometheus_binary
    from tests.support.proxy import InThreadProxy, ProxyProcess

Free ports come from the emulator (``tests.tei_emulator.process.free_port``).
"""
