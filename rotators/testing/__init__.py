"""Test support, never in a Lambda bundle: the conformance kit for custom rotators (a pytest
plugin, `pytest_plugins = ["rotators.testing.conformance"]`) and the local stand-ins for the real
parts that the tests and `rotators demo` run (PostgreSQL, MariaDB, a MongoDB-wire server, a
Secrets Manager endpoint, a certificate authority)."""
