"""Ops tests use real services (SeaweedFS, PostgreSQL) started on free loopback ports."""

from tests.fixtures_services import *  # noqa: F401,F403
