"""A fake OpenID Connect provider on loopback, for the admin's single sign-on.

It serves what a real provider serves to a confidential client using the authorization
code flow with PKCE, and checks what a strict one checks:

    /.well-known/openid-configuration   discovery, naming the endpoints below
    /authorize   approves `user` at once (no login page) and redirects back with a code,
                 after checking client_id, redirect_uri, an `openid` scope, a nonce and
                 an S256 code_challenge; otherwise it redirects back with an error
    /token       client_secret_basic or client_secret_post; the code once, the same
                 redirect_uri, and the code_verifier whose hash is the challenge; answers
                 an access token and an RS256 ID token carrying the nonce
    /userinfo    the user's claims, for the access token as a bearer token
    /jwks        the public half of an RSA key made when the provider starts

`token_fault` makes the next ID tokens wrong in one way (see FAULTS), to test that the
gateway refuses them. The server runs in a daemon thread on a free port, so both the test
process and a gateway in another process (daphne) reach it.

Usage::

    with FakeProvider().start() as provider:
        provider.user = {"sub": "u-1", "preferred_username": "alice", "groups": [...]}
        ... OIDC_ISSUER = provider.issuer ...
"""

import base64
import contextlib
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

CLIENT_ID = "gateway-admin"
CLIENT_SECRET = "fake-provider-client-secret-of-40-bytes.."
KEY_ID = "fake-key-1"
# Seconds an ID token is valid for.
TOKEN_LIFETIME = 300

# Ways an ID token can be wrong: each must be refused by the gateway.
FAULTS = (
    # Signed with a key the provider does not publish, under the published key's id.
    "other-key",
    # HMAC-signed with the client secret, which a client that trusts the header would check.
    "hs256",
    # Not signed at all.
    "none",
    # A claim changed after signing (groups raised to the superuser group).
    "tampered",
    "wrong-audience",
    "wrong-issuer",
    "wrong-nonce",
    "expired",
)


def _new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class FakeProvider:
    def __init__(self):
        self.key = _new_key()
        self.user = {"sub": "user-0", "preferred_username": "nobody"}
        self.token_fault = None
        self.issuer = ""
        # What the provider was sent, for tests to look at.
        self.authorization_requests = []
        self.token_requests = []
        self._codes = {}
        self._access_tokens = {}
        self._server = None

    @contextlib.contextmanager
    def start(self):
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}"
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()

    def reset(self):
        self.token_fault = None
        self.authorization_requests.clear()
        self.token_requests.clear()

    def discovery(self):
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
            ],
        }

    def jwks(self):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [jwk | {"kid": KEY_ID, "alg": "RS256", "use": "sig"}]}

    # The flow.

    def authorize(self, query):
        """Return the URL the browser is sent back to, with a code or an error."""
        self.authorization_requests.append(query)
        redirect_uri = query.get("redirect_uri", "")
        if not redirect_uri:
            raise ValueError("no redirect_uri")
        problem = self._authorization_problem(query)
        answer = {"state": query.get("state", "")}
        if problem:
            answer |= {"error": "invalid_request", "error_description": problem}
        else:
            code = secrets.token_urlsafe(24)
            self._codes[code] = {
                "redirect_uri": redirect_uri,
                "challenge": query["code_challenge"],
                "nonce": query["nonce"],
                "user": dict(self.user),
            }
            answer["code"] = code
        return f"{redirect_uri}?{urlencode(answer)}"

    def _authorization_problem(self, query):
        if query.get("client_id") != CLIENT_ID:
            return "unknown client_id"
        if query.get("response_type") != "code":
            return "response_type must be code"
        if "openid" not in query.get("scope", "").split():
            return "the openid scope is missing"
        if not query.get("nonce"):
            return "a nonce is required"
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return "PKCE with S256 is required"
        return None

    def token(self, form, authorization):
        """Return (status, body) for a token request."""
        self.token_requests.append(dict(form))
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization.startswith("Basic "):
            decoded = base64.b64decode(authorization.removeprefix("Basic ")).decode()
            client_id, _, client_secret = decoded.partition(":")
        if client_id != CLIENT_ID or client_secret != CLIENT_SECRET:
            return 401, {"error": "invalid_client"}
        if form.get("grant_type") != "authorization_code":
            return 400, {"error": "unsupported_grant_type"}
        grant = self._codes.pop(form.get("code", ""), None)
        if grant is None:
            return 400, {"error": "invalid_grant", "error_description": "unknown or used code"}
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri differs"}
        verifier = form.get("code_verifier", "")
        if _b64url(hashlib.sha256(verifier.encode("ascii")).digest()) != grant["challenge"]:
            return 400, {"error": "invalid_grant", "error_description": "code_verifier is wrong"}
        access_token = secrets.token_urlsafe(24)
        self._access_tokens[access_token] = grant["user"]
        return 200, {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME,
            "id_token": self.id_token(grant["user"], grant["nonce"]),
        }

    def userinfo(self, authorization):
        user = self._access_tokens.get(authorization.removeprefix("Bearer "))
        if user is None:
            return 401, {"error": "invalid_token"}
        return 200, user

    def id_token(self, user, nonce):
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + TOKEN_LIFETIME,
            "nonce": nonce,
        } | user
        fault = self.token_fault
        if fault == "wrong-audience":
            claims["aud"] = "another-client"
        elif fault == "wrong-issuer":
            claims["iss"] = "https://impostor.example"
        elif fault == "wrong-nonce":
            claims["nonce"] = "not-the-nonce"
        elif fault == "expired":
            claims |= {"iat": now - 2 * TOKEN_LIFETIME, "exp": now - TOKEN_LIFETIME}
        headers = {"kid": KEY_ID}
        if fault == "hs256":
            return jwt.encode(claims, CLIENT_SECRET, algorithm="HS256", headers=headers)
        if fault == "none":
            return jwt.encode(claims, None, algorithm="none", headers=headers)
        key = _new_key() if fault == "other-key" else self.key
        token = jwt.encode(claims, key, algorithm="RS256", headers=headers)
        if fault == "tampered":
            header, _, signature = token.split(".")
            raised = claims | {"groups": ["gateway-superusers"]}
            body = _b64url(json.dumps(raised).encode())
            token = f"{header}.{body}.{signature}"
        return token


def _handler(provider):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            url = urlsplit(self.path)
            query = {name: values[0] for name, values in parse_qs(url.query).items()}
            if url.path == "/.well-known/openid-configuration":
                self._json(200, provider.discovery())
            elif url.path == "/jwks":
                self._json(200, provider.jwks())
            elif url.path == "/authorize":
                self.send_response(302)
                self.send_header("Location", provider.authorize(query))
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif url.path == "/userinfo":
                self._json(*provider.userinfo(self.headers.get("Authorization", "")))
            else:
                self._json(404, {"error": "not_found"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length).decode()
            form = {name: values[0] for name, values in parse_qs(body).items()}
            if urlsplit(self.path).path == "/token":
                self._json(*provider.token(form, self.headers.get("Authorization", "")))
            else:
                self._json(404, {"error": "not_found"})

        def _json(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *args):
            pass

    return Handler
