"""Apply the Hubside data-gateway's variables to a user's server at spawn.

In jupyterhub_config.py (or z2jh ``hub.extraConfig``)::

    import sys; sys.path.insert(0, "/srv/hubside/hub")
    from data_gateway_env import data_gateway_pre_spawn_hook
    c.Spawner.pre_spawn_hook = data_gateway_pre_spawn_hook
    c.DataGatewayEnv.url = "http://127.0.0.1:10104/services/data-gateway/"  # or set HUBSIDE_GATEWAY_URL

    # A server's token has only the 'server' role, and a token never holds more than its
    # owner: give users access to the gateway, and the server role the same scope, so the
    # notebook's JUPYTERHUB_API_TOKEN reaches the gateway (hubside-creds needs it). Keep the
    # role's default scopes (JupyterHub 3: access:servers!user; 4+: access:servers!server).
    c.JupyterHub.load_roles = [
        {"name": "user", "scopes": ["self", "access:services!service=data-gateway"]},
        {"name": "server", "scopes": ["users:activity!user", "access:servers!user",
                                      "access:services!service=data-gateway"]},
    ]

The hook asks the gateway's ``api/env`` with the server's own token (so only what this user may
access is listed) and merges the answer into ``spawner.environment``: bucket URLs such as
``SCRATCH_BUCKET``, ``HUBSIDE_GATEWAY_URL``, ``HUBSIDE_CREDS_DATASET`` and
``HUBSIDE_AWS_CONFIG`` (the ``credential_process`` profile; write it to ``~/.aws/config`` in the
image's start-up script, e.g. ``printf '%s' "$HUBSIDE_AWS_CONFIG" > ~/.aws/config``).

Only variables meant for a server are taken: names starting with ``HUBSIDE_``, ``AWS_ENDPOINT_URL``
or ``AWS_DEFAULT_REGION``, names ending in ``_BUCKET``, and names listed in
``c.DataGatewayEnv.names``; others (``PATH``, ``LD_PRELOAD``, ``JUPYTERHUB_*``…) are dropped and
named in a warning.

A gateway that is down or hangs never blocks a spawn: after at most 5 s (connect and request
timeouts) the server starts without the variables and the hub logs a warning. No token is logged.
Servers started during an outage keep running without the variables until their next start.
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
    # Dataset variables (envVar in the community file) end in _BUCKET or start with HUBSIDE_DATASET_.
    return name.startswith(_ALLOWED_PREFIXES) or name.endswith("_BUCKET") or name in explicit


async def data_gateway_env(spawner, url=None, extra_names=()):
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
    if not isinstance(env, dict):
        spawner.log.warning("data-gateway: %s answered no env object; starting without its variables", base)
        return {}
    taken = {k: v for k, v in env.items() if _allowed(k, v, names)}
    dropped = sorted(str(k) for k in env if k not in taken)
    if dropped:
        # Names only (they come from the community file); values may be user-specific.
        spawner.log.warning(
            "data-gateway: ignored variables not meant for a server: %s (allow them with c.DataGatewayEnv.names)",
            ", ".join(dropped)[:500],
        )
    return taken


async def data_gateway_pre_spawn_hook(spawner):
    env = await data_gateway_env(spawner)
    spawner.environment = {**spawner.environment, **env}
