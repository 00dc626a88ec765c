"""Registry credentials from an ImageCache's ``imagePullSecrets`` (pure).

A ``kubernetes.io/dockerconfigjson`` Secret holds a docker ``config.json``; the credentials for
an image's registry go with its pre-warm as the ``Authorization`` header
(:meth:`warmstart.agent.client.AgentClient.prewarm`), which the agent checks against the
upstream as it would a pull's. Only username/password entries can be sent this way; an entry
with just an identity token is reported, not used.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from typing import Any

from warmstart.oci import Reference
from warmstart.registry.credentials import CredentialsError, CredentialStore

DOCKER_CONFIG_JSON = "kubernetes.io/dockerconfigjson"
DATA_KEY = ".dockerconfigjson"


def secret_credentials(secret: Mapping[str, Any]) -> CredentialStore:
    """The Secret's credentials; ValueError (one line) if it is not a usable pull secret."""
    name = (secret.get("metadata") or {}).get("name")
    if secret.get("type") != DOCKER_CONFIG_JSON:
        raise ValueError(f"secret {name} is not of type {DOCKER_CONFIG_JSON}")
    raw = (secret.get("data") or {}).get(DATA_KEY)
    if not isinstance(raw, str):
        raise ValueError(f"secret {name} has no {DATA_KEY}")
    try:
        doc = json.loads(base64.b64decode(raw, validate=True))
        return CredentialStore.from_docker_config_data(doc)
    except (binascii.Error, ValueError, CredentialsError) as e:
        raise ValueError(f"secret {name}: {e}") from None


def authorization_for(image: str, stores: Iterable[CredentialStore]) -> str | None:
    """The ``Authorization`` value for pre-warming ``image`` (the first secret that has its
    registry), or None."""
    registry = Reference.parse(image).registry
    for store in stores:
        creds = store.get(registry)
        if creds is not None and creds.has_basic:
            return creds.basic_header()
    return None
