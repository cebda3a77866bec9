"""Authenticate a request by its `Authorization: Bearer <key>` header."""

from apikeys.models import ApiKey
from gateway.errors import AuthenticationFailed


async def authenticate(request):
    """Return the request's active ApiKey, or raise AuthenticationFailed (401)."""
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it in the Authorization header as "
            "'Authorization: Bearer YOUR_KEY'.",
            code="missing_api_key",
        )
    key = await ApiKey.objects.afor_secret(secret.strip())
    if key is None:
        # Never echo the secret back: error messages end up in logs.
        raise AuthenticationFailed()
    if key.state != "active":
        raise AuthenticationFailed(f"This API key is {key.state}.", code=f"{key.state}_api_key")
    key.touch()
    return key
