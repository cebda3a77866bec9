"""Secrets the gateway must use again, such as a webhook's signing secret, stored encrypted.

A key's secret is stored as a digest only, since the gateway merely compares it; a secret
the gateway signs with must be read back, so it is stored encrypted instead (Fernet:
AES-128-CBC with an HMAC-SHA256, from `cryptography`) with a key derived from SECRET_KEY.
A database dump alone then holds no usable secret. SECRET_KEY_FALLBACKS still decrypt, so
SECRET_KEY can be rotated; a value no key decrypts reads as empty, and a warning asks for
it to be set again.

In forms the field is write-only: its input never shows the stored value, and leaving it
empty keeps the value stored. Serializers (dumpdata) leave it out.
"""

import base64
import hashlib
import logging

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django import forms
from django.conf import settings
from django.db import models

logger = logging.getLogger(__name__)

# Keeps the encryption key apart from other uses of SECRET_KEY (sessions, signing).
KEY_SALT = b"gateway.encryption.EncryptedSecretField"


def _fernet(secret_key):
    material = hashlib.sha256(KEY_SALT + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(material))


def _keys():
    return MultiFernet(
        [_fernet(key) for key in [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]]
    )


def encrypt(text):
    return _keys().encrypt(text.encode()).decode("ascii")


def decrypt(token):
    """Return the text of a token made by encrypt(), or raise InvalidToken."""
    return _keys().decrypt(token.encode("ascii")).decode()


class WriteOnlyField(forms.CharField):
    """A password input that never renders the stored value; empty keeps it."""

    widget = forms.PasswordInput(render_value=False)

    def has_changed(self, initial, data):
        return bool(data)


class EncryptedSecretField(models.TextField):
    """Text stored encrypted with a key derived from SECRET_KEY (module docstring)."""

    # Read by whatever lists changes of fields (an audit log): never the value.
    secret = True

    def from_db_value(self, value, expression, connection):
        if not value:
            return ""
        try:
            return decrypt(value)
        except InvalidToken:
            logger.warning(
                "A stored %s cannot be decrypted with SECRET_KEY or SECRET_KEY_FALLBACKS; "
                "it reads as empty until it is set again",
                self.verbose_name,
            )
            return ""

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return encrypt(value) if value else ""

    def value_to_string(self, obj):
        # Serialized (dumpdata), the secret is left out rather than written in the clear;
        # a database backup keeps it encrypted.
        return ""

    def formfield(self, **kwargs):
        return super().formfield(**{"form_class": WriteOnlyField, **kwargs, "widget": None})

    def save_form_data(self, instance, data):
        if data:
            super().save_form_data(instance, data)
