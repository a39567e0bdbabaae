"""Bodies of `/v1/keys` and of SendGrid's `/v3/api_keys` and `/v3/scopes`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from app.accounts.models import ApiKey
from app.accounts.scopes import Scope
from app.common.fields import NotNull

KeyName = Annotated[str, Field(min_length=1, max_length=100)]


def effective_scopes(api_key: ApiKey) -> list[str]:
    """The key's scopes; a full-access key holds every scope (as SendGrid lists them)."""
    if api_key.scopes is None:
        return sorted(scope.value for scope in Scope)
    return sorted(api_key.scopes)


class SgKeyCreate(BaseModel):
    """`POST /v3/api_keys`: without `scopes` the key has full access."""

    model_config = ConfigDict(
        extra="ignore", json_schema_extra={"examples": [{"name": "Mail", "scopes": ["mail.send"]}]}
    )

    name: KeyName
    scopes: list[str] | None = None


class SgKeyRename(BaseModel):
    """`PATCH /v3/api_keys/{api_key_id}`."""

    model_config = ConfigDict(extra="ignore")

    name: KeyName


class SgKeyReplace(BaseModel):
    """`PUT /v3/api_keys/{api_key_id}`: name and scopes (at least one)."""

    model_config = ConfigDict(extra="ignore")

    name: KeyName
    scopes: list[str] | None = None


class SgKeyCreated(BaseModel):
    """A key just created: the only answer that carries its secret."""

    api_key: str
    api_key_id: str
    name: str
    scopes: list[str]


class SgKey(BaseModel):
    """A key by id and name."""

    api_key_id: str
    name: str

    @classmethod
    def of(cls, api_key: ApiKey) -> SgKey:
        """From the stored key."""
        return cls(api_key_id=api_key.prefix, name=api_key.name)


class SgKeyWithScopes(SgKey):
    """A key by id and name, with its scopes."""

    scopes: list[str]

    @classmethod
    def of(cls, api_key: ApiKey) -> SgKeyWithScopes:
        """From the stored key."""
        return cls(api_key_id=api_key.prefix, name=api_key.name, scopes=effective_scopes(api_key))


class SgKeyList(BaseModel):
    """`{"result": [...]}` as SendGrid answers."""

    result: list[SgKey]


class SgKeyDetail(BaseModel):
    """`GET /v3/api_keys/{api_key_id}`: the key in a one-element `result`, as SendGrid's
    reference describes it."""

    result: list[SgKeyWithScopes]


class SgScopes(BaseModel):
    """The scopes of the calling key."""

    scopes: list[str]


class KeyCreate(BaseModel):
    """`POST /v1/keys`: `scopes` omitted (or null) gives full access."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "shop mail", "scopes": ["mail.send"]}]},
    )

    name: KeyName
    scopes: list[str] | None = None


class KeyUpdate(BaseModel):
    """`PATCH /v1/keys/{id}`: only the fields given change (`scopes: null` is full access)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[KeyName | SkipJsonSchema[None], NotNull] = None
    scopes: list[str] | None = None


class KeyView(BaseModel):
    """A key (never its secret); `id` is the public part between `SG.` and the second dot."""

    id: str
    name: str
    scopes: list[str] | None = Field(description="null: full access")
    created_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, api_key: ApiKey) -> KeyView:
        """From the stored key."""
        return cls(
            id=api_key.prefix,
            name=api_key.name,
            scopes=api_key.scopes,
            created_at=api_key.created_at,
            last_used_at=api_key.last_used_at,
        )


class KeyCreated(KeyView):
    """A key just created: the only time its secret is shown."""

    key: str = Field(description="`SG.…`: use it as the Bearer token. Shown only now.")


class KeyList(BaseModel):
    """The account's active keys, oldest first."""

    keys: list[KeyView]
