"""The stack generator: stack/.env -> compose.yml, nginx.conf, prometheus.yml and Kubernetes.

Standard library + PyYAML only (it runs with the system python3). Every setting is declared
once, as a field of `settings.Settings`; each output has its own module.
"""
