"""Secrets read through Powertools Parameters (SSM Parameter Store, SecureString, cached).

Node secrets live at `{prefix}/{cluster}/{node}`; webhook URLs under names from the template.
Values are never logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.parameters import SSMProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from botocore.exceptions import ClientError

from gpulse.errors import StoreError

SECRET_MAX_AGE_S = 900  # SSM allows 40 reads/s by default; a long cache keeps a big fleet under it
UNKNOWN_NODE_MAX_AGE_S = 60  # a flood from an unregistered node costs one SSM read a minute


def _not_found(e: GetParameterError) -> bool:
    # Powertools wraps the SDK error; its ClientError stays reachable as the exception's context.
    ctx = e.__cause__ or e.__context__
    return isinstance(ctx, ClientError) and ctx.response.get("Error", {}).get("Code") == "ParameterNotFound"


class SsmParameters:
    """Decrypted SSM parameters by name, cached; `None` for a name that does not exist."""

    def __init__(
        self,
        provider: SSMProvider | None = None,
        *,
        max_age: int = SECRET_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider or SSMProvider()
        self.max_age = max_age
        self.clock = clock
        self._missing: dict[str, float] = {}

    def get(self, name: str) -> str | None:
        missing_at = self._missing.get(name)
        if missing_at is not None and self.clock() - missing_at < UNKNOWN_NODE_MAX_AGE_S:
            return None
        try:
            value: Any = self.provider.get(name, decrypt=True, max_age=self.max_age)
        except GetParameterError as e:
            if _not_found(e):
                self._missing[name] = self.clock()
                return None
            raise StoreError(f"could not read SSM parameter {name}") from None
        self._missing.pop(name, None)
        return str(value)


class SsmNodeSecrets:
    """The ingest SecretSource: one SecureString per node under `prefix`."""

    def __init__(self, prefix: str, parameters: SsmParameters | None = None) -> None:
        self.prefix = prefix.rstrip("/")
        self.parameters = parameters or SsmParameters()

    def node_secret(self, cluster: str, node: str) -> bytes | None:
        value = self.parameters.get(f"{self.prefix}/{cluster}/{node}")
        return value.strip().encode() if value is not None else None
