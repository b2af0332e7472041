"""Local stand-ins for the real parts (a PostgreSQL server, a Secrets Manager endpoint).

Used by the test suite and `rotators demo`; never imported by a Lambda handler.
"""
