"""Apply the Hubside data-gateway's variables to a user's server at spawn.

In jupyterhub_config.py (or z2jh ``hub.extraConfig``)::

    import sys; sys.path.insert(0, "/srv/hubside/hub")
    from data_gateway_env import data_gateway_pre_spawn_hook
    c.Spawner.pre_spawn_hook = data_gateway_pre_spawn_hook
    c.DataGatewayEnv.url = "http://127.0.0.1:10104/services/data-gateway/"  # or set HUBSIDE_GATEWAY_URL

    # JupyterHub 3 gives a server's token only the 'server' role; the notebook's
    # JUPYTERHUB_API_TOKEN must also reach the gateway for hubside-creds to work:
    c.JupyterHub.load_roles = [
        {"name": "server", "scopes": ["users:activity!user", "access:servers!server",
                                      "access:services!service=data-gateway"]},
    ]

The hook asks the gateway's ``api/env`` with the server's own token (so only what this user may
access is listed) and merges the answer into ``spawner.environment``: bucket URLs such as
``SCRATCH_BUCKET``, ``HUBSIDE_GATEWAY_URL``, ``HUBSIDE_CREDS_DATASET`` and
``HUBSIDE_AWS_CONFIG`` (the ``credential_process`` profile; write it to ``~/.aws/config`` in the
image's start-up script, e.g. ``printf '%s' "$HUBSIDE_AWS_CONFIG" > ~/.aws/config``).

A gateway that is down never blocks a spawn: the server starts without the variables and the
hub logs a warning. No token is logged.
"""
import json
import os

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

# Only these names are taken from the gateway's answer; anything else is ignored, so a
# misbehaving gateway cannot set PATH, LD_PRELOAD or JUPYTERHUB_* in a user's server.
_ALLOWED_PREFIXES = ("HUBSIDE_", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
_TIMEOUT_S = 5.0


def _allowed(name, value, explicit):
    if not isinstance(name, str) or not isinstance(value, str):
        return False
    return name.startswith(_ALLOWED_PREFIXES) or name in explicit


async def data_gateway_env(spawner, url=None, extra_names=("SCRATCH_BUCKET",)):
    """Return the variables for this spawner's user (an empty dict if the gateway is unreachable)."""
    base = url or getattr(spawner.config, "DataGatewayEnv", {}).get("url") or os.environ.get("HUBSIDE_GATEWAY_URL")
    if not base:
        spawner.log.warning("data-gateway: no URL configured (c.DataGatewayEnv.url); skipping")
        return {}
    if not base.endswith("/"):
        base += "/"
    names = set(extra_names) | set(getattr(spawner.config, "DataGatewayEnv", {}).get("names", []))
    request = HTTPRequest(
        base + "api/env",
        headers={"Authorization": "token " + spawner.api_token, "Accept": "application/json"},
        request_timeout=_TIMEOUT_S,
        connect_timeout=_TIMEOUT_S,
    )
    try:
        response = await AsyncHTTPClient().fetch(request, raise_error=True)
        env = json.loads(response.body.decode("utf8")).get("env", {})
    except Exception as e:  # noqa: BLE001 - a gateway problem must not stop the spawn
        spawner.log.warning("data-gateway: %s answered %s; starting without its variables", base, type(e).__name__)
        return {}
    # Dataset variables (envVar in the community file) end in _BUCKET or start with HUBSIDE_DATASET_.
    return {k: v for k, v in env.items() if _allowed(k, v, names) or (isinstance(k, str) and k.endswith("_BUCKET") and isinstance(v, str))}


async def data_gateway_pre_spawn_hook(spawner):
    env = await data_gateway_env(spawner)
    spawner.environment = {**spawner.environment, **env}
