"""The reference side of bench/hub-auth: a minimal JupyterHub service written the way
JupyterHub documents it, with the `HubAuthenticated` mixin shipped in `jupyterhub.services.auth`.

GET {JUPYTERHUB_SERVICE_PREFIX}api/whoami  -> the hub's user model as JSON (token auth)
GET {JUPYTERHUB_SERVICE_PREFIX}health      -> {"status": "ok"}, no auth (lets the benchmark
                                              open its connections before a timed storm)

Started by the hub as a managed service with Debian's /usr/bin/python3. Nothing here tunes
HubAuth: cache size and age (300 s), the HTTP client and the scope checks are JupyterHub's own.

REFERENCE_AUTH_MODE
  sync  (default) the documented pattern: `@web.authenticated` calls `get_current_user()`, which
        HubAuth answers on its background thread (a blocking call from the IO loop).
  async resolve the user in `prepare()` with `await hub_auth.get_user(self, sync=False)`
        (HubAuth's async API since JupyterHub 2.4), then apply the same `check_hub_user`.
REFERENCE_LOG_LEVEL  Python logging level for every logger, tornado.access included (WARNING).
"""
import json
import logging
import os
from urllib.parse import urlparse

from tornado import httpserver, ioloop, web

from jupyterhub.services.auth import HubAuthenticated, UserNotAllowed
from jupyterhub.utils import url_path_join

MODE = os.environ.get("REFERENCE_AUTH_MODE", "sync")
LEVEL = os.environ.get("REFERENCE_LOG_LEVEL", "WARNING").upper()


class WhoAmIHandler(HubAuthenticated, web.RequestHandler):
    """The caller's hub identity, exactly as the hub returned it to HubAuth."""

    def get_login_url(self):
        # An API answers 403 rather than redirecting a client without credentials to a login page.
        raise web.HTTPError(403, "token required")

    @web.authenticated
    def get(self):
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(self.current_user))


class AsyncWhoAmIHandler(WhoAmIHandler):
    """Resolves the user before get() with HubAuth's async API; the scope check is the same."""

    async def prepare(self):
        model = await self.hub_auth.get_user(self, sync=False)
        if not model:
            self._hub_auth_user_cache = None
            return
        try:
            self._hub_auth_user_cache = self.check_hub_user(model)
        except UserNotAllowed:
            self._hub_auth_user_cache = None
            raise web.HTTPError(403, "{kind} {name} is not allowed.".format(**model))


class HealthHandler(web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "application/json")
        self.finish('{"status": "ok"}')


def main():
    logging.basicConfig(level=LEVEL, format="[reference %(levelname)s %(name)s] %(message)s")
    for name in ("tornado.access", "tornado.application", "tornado.general", "JupyterHub"):
        logging.getLogger(name).setLevel(LEVEL)
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/reference/")
    bind = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    app = web.Application(
        [
            (url_path_join(prefix, "api/whoami"), AsyncWhoAmIHandler if MODE == "async" else WhoAmIHandler),
            (url_path_join(prefix, "health"), HealthHandler),
        ]
    )
    server = httpserver.HTTPServer(app, xheaders=True)
    server.listen(bind.port, bind.hostname or "127.0.0.1")
    logging.getLogger("reference").warning(
        "reference whoami (%s mode) on %s%s", MODE, bind.geturl(), prefix
    )
    ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
