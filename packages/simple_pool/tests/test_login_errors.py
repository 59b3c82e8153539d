"""What a refused login says: who, where, never the password; which messages are refusals.

Pure logic over the texts the drivers give (measured; see the adapters). Found by
outside attacks: pgdb takes a whole conninfo as ``database=`` (its password was
in the message), and PgBouncer 1.18 refuses a SCRAM login with
``FATAL:  SASL authentication failed``, naming no user (it was taken for an outage).
"""

from __future__ import annotations

import pytest

from tether.simple_pool.drivers._postgres import libpq_auth_failure
from tether.simple_pool.drivers.base import _secrets, describe_target

DSN = "host=127.0.0.1 port=55434 dbname=app user=alice password=s3cret"


@pytest.mark.parametrize("key", ["dsn", "conninfo", "dbname", "database"])
def test_a_conninfo_under_any_of_its_keywords_is_described_without_its_password(key: str) -> None:
    described = describe_target((), {key: DSN})
    assert described == "user 'alice' at host 127.0.0.1:55434, database 'app'"
    assert "s3cret" not in described
    assert _secrets((), {key: DSN}) == ["s3cret"]


def test_a_plain_database_name_is_described_as_given() -> None:
    assert describe_target((), {"database": "app", "user": "bob"}) == (
        "user 'bob' at host (default), database 'app'"
    )


def test_a_creator_without_arguments_is_not_described_as_defaults() -> None:
    """A lambda's (or SQLAlchemy's bound-method creator's) target is inside the function:
    "user '(default)'" named a user the login did not use (eighth outside attack)."""
    described = describe_target((), {})
    assert "(default)" not in described
    assert described == "the user, host and database its creator function connects with"


@pytest.mark.parametrize(
    "text",
    [
        'connection failed: FATAL:  password authentication failed for user "app"',
        'connection to server at "127.0.0.1", port 6432 failed: FATAL:  SASL authentication failed',
    ],
)
def test_refused_logins_are_authentication_failures(text: str) -> None:
    assert libpq_auth_failure(Exception(text))


def test_a_refused_connection_is_not_an_authentication_failure() -> None:
    assert not libpq_auth_failure(Exception("connection refused: is the server running?"))
