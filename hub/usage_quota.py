"""Pre-spawn budget check against Hubside's usage-collector.

In jupyterhub_config.py (or z2jh hub.extraConfig):

    import sys; sys.path.insert(0, "/srv/hubside/hub")
    from usage_quota import make_usage_quota_hook
    c.Spawner.pre_spawn_hook = make_usage_quota_hook(
        url="http://127.0.0.1:9103/services/usage-collector/",
        token=os.environ["HUBSIDE_USAGE_TOKEN"],   # a service token with read:users and
                                                 # access:services!service=usage-collector
        fail_open=True,   # usage-collector down or slow: let the spawn go ahead (False: refuse it)
    )

The collector answers GET {url}api/users/{name}/quota with
{allow_server_launch, used, limit, unit, window, message}; a refusal is raised as HTTP 403 with
that message, which the hub shows on the spawn page and returns from its REST API.
Works with the hub's own Python (tornado only, no extra packages).
"""

import json
from urllib.parse import quote

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest


def make_usage_quota_hook(url, token, fail_open=True, timeout=5.0, chain=None):
    """Return an async pre_spawn_hook; `chain` is an existing hook to run first."""
    base = url if url.endswith("/") else url + "/"

    async def usage_quota_hook(spawner):
        if chain is not None:
            result = chain(spawner)
            if hasattr(result, "__await__"):
                await result
        name = spawner.user.name
        # Names are free text: quote every character that is not unreserved.
        request = HTTPRequest(
            base + "api/users/" + quote(name, safe="") + "/quota",
            headers={"Authorization": "token " + token, "Accept": "application/json"},
            request_timeout=timeout,
            connect_timeout=timeout,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
            body = json.loads(response.body.decode("utf8"))
            allowed = body.get("allow_server_launch")
            if not isinstance(allowed, bool):
                raise ValueError("answer without allow_server_launch")
        except Exception as e:  # network, timeout, 4xx/5xx, bad JSON: all mean "no answer"
            status = e.code if isinstance(e, HTTPClientError) else None
            spawner.log.warning(
                "usage quota check for %s failed (%s%s); %s",
                name,
                type(e).__name__,
                f", HTTP {status}" if status else "",
                "allowing the spawn (fail-open)" if fail_open else "refusing the spawn (fail-closed)",
            )
            if fail_open:
                return
            raise web.HTTPError(
                503, "The usage service could not check your budget, so new servers cannot start right now."
            )
        if not allowed:
            message = body.get("message")
            if not isinstance(message, str) or not message.strip():
                message = "Your usage budget is used up, so no new server can be started. If you need more, ask your instructor or a hub admin."
            spawner.log.info("usage quota refused a spawn for %s", name)
            # The message is an argument, never a format string (it may carry a '%' from a group name).
            raise web.HTTPError(403, "%s", message)

    return usage_quota_hook
