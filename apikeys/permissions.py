"""What a key may do: its permission level and its list of models."""

from gateway.errors import ModelNotFound, PermissionDenied


def require_write(key):
    """Refuse a `read` key on an endpoint that runs a model (403)."""
    if not key.can_write:
        raise PermissionDenied(
            f"The API key '{key.name}' has read permission only; this endpoint needs read-write."
        )


def require_model_access(key, model, requested_name):
    """Answer a model outside the key's list as if it did not exist (404).

    404 rather than 403, so that a key cannot probe which models the gateway serves.
    """
    if not key.allows_model(requested_name, model.name):
        raise ModelNotFound(requested_name)
