"""Errors of the field client, each with a stable code and a sentence for people.

    MinqingError (schema.errors)
    └── ClientError              anything the field client refuses (``client.*``)
        ├── NotInitialised       no device here yet (``client.not_initialised``)
        ├── AlreadyInitialised   refusing to overwrite a device (``client.already_initialised``)
        ├── WrongPassphrase      the passphrase does not unlock the keys (``client.wrong_passphrase``)
        ├── KeyfileDamaged       the key file is unreadable (``client.keyfile_damaged``)
        ├── NotFound             no such case or record (``client.not_found``)
        └── InputInvalid         a value typed by a person is not acceptable (``client.input``)

Errors from the layers below (``OpInvalid``, ``ReplicaDamaged``, ...) pass through with
their own codes; the CLI and the web turn every ``MinqingError`` into a sentence.
``cryptography`` exceptions are translated in ``field_client.keystore`` only.
"""

from __future__ import annotations

from schema.errors import MinqingError


class ClientError(MinqingError):
    """Anything the field client refuses."""

    code = "client.error"


class NotInitialised(ClientError):
    """No device has been set up in this data folder."""

    code = "client.not_initialised"


class AlreadyInitialised(ClientError):
    """A device already exists here; the client will not overwrite it."""

    code = "client.already_initialised"


class WrongPassphrase(ClientError):
    """The passphrase does not unlock this device's keys."""

    code = "client.wrong_passphrase"


class KeyfileDamaged(ClientError):
    """The key file cannot be read."""

    code = "client.keyfile_damaged"


class NotFound(ClientError):
    """No such case or record on this laptop."""

    code = "client.not_found"


class InputInvalid(ClientError):
    """A value a person typed is not acceptable; ``details`` maps field -> message."""

    code = "client.input"
