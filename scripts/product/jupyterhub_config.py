"""The hub of `npm start`: JupyterHub with the four Hubside services wired in as docs/ tell an operator.

Everything variable (ports, tokens, people, paths) comes from the JSON file named by
HUBSIDE_PRODUCT_SETTINGS, written by scripts/product/product.mjs; no name is pasted into Python.
The services run beside the hub (started by the launcher, side by side), so each entry here is
an external service: `url` and `api_token`, as for a Kubernetes Deployment.
"""
import json
import os
import sys

c = get_config()  # noqa: F821

with open(os.environ["HUBSIDE_PRODUCT_SETTINGS"], encoding="utf-8") as _f:
    s = json.load(_f)
state = s["stateDir"]

c.JupyterHub.bind_url = s["publicUrl"] + "/"
c.JupyterHub.hub_bind_url = s["hubBindUrl"]
c.JupyterHub.db_url = "sqlite:///" + os.path.join(state, "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = os.path.join(state, "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = os.path.join(state, "jupyterhub.pid")
c.ConfigurableHTTPProxy.api_url = s["proxyApiUrl"]
c.ConfigurableHTTPProxy.auth_token = s["proxyAuthToken"]
c.ConfigurableHTTPProxy.pid_file = os.path.join(state, "proxy.pid")
if s.get("proxyCommand"):
    c.ConfigurableHTTPProxy.command = s["proxyCommand"]
# After login people land on the hub's home page, with the Services menu and "Start My Server".
c.JupyterHub.redirect_to_server = False
c.JupyterHub.template_paths = [s["templatesDir"]]
c.JupyterHub.template_vars = {"hubside": s["templateVars"]}

# ---- login ----------------------------------------------------------------------------------
people = s["people"]
if s["login"] == "oidc":
    # Through auth-bridge (an OpenID provider in front of the demo identity provider).
    o = s["oidc"]
    c.JupyterHub.authenticator_class = "generic-oauth"
    c.GenericOAuthenticator.client_id = o["clientId"]
    c.GenericOAuthenticator.client_secret = o["clientSecret"]
    c.GenericOAuthenticator.oauth_callback_url = o["callbackUrl"]
    c.GenericOAuthenticator.authorize_url = o["authorizeUrl"]
    c.GenericOAuthenticator.token_url = o["tokenUrl"]
    c.GenericOAuthenticator.userdata_url = o["userdataUrl"]
    c.GenericOAuthenticator.scope = ["openid", "profile", "email", "groups"]
    c.GenericOAuthenticator.username_claim = "username"
    c.GenericOAuthenticator.login_service = "Hubside auth-bridge (demo identity provider)"
    c.Authenticator.allowed_users = {p["name"] for p in people}
else:
    # Fallback: no oauthenticator in the hub's Python. The login page (templates/login.html)
    # lists the demo people and says how to get the real login.
    c.JupyterHub.authenticator_class = "dummy"
    c.Authenticator.allowed_users = {p["name"] for p in people}
c.Authenticator.admin_users = {p["name"] for p in people if p.get("hubAdmin")}
c.JupyterHub.load_groups = s["groups"]

# ---- servers ----------------------------------------------------------------------------------
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = os.path.join(state, "home", "{username}")
c.Spawner.cmd = s["singleuserCommand"]
c.Spawner.ip = "127.0.0.1"
if os.geteuid() == 0:
    c.Spawner.args = ["--allow-root"]
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
c.LocalProcessSpawner.interrupt_timeout = 2
c.LocalProcessSpawner.term_timeout = 2

# ---- services, each with its own role ------------------------------------------------------
from jupyterhub.services.service import Service  # noqa: E402

_has_display_name = "display_name" in Service.class_traits()
services = []
for spec in s["services"]:
    entry = dict(spec["entry"])
    if _has_display_name:
        entry["display_name"] = spec["displayName"]
    else:
        # JupyterHub < 4.1 refuses unknown service fields; templates/page.html shows this instead.
        entry["info"] = {**entry.get("info", {}), "display_name": spec["displayName"]}
    services.append(entry)
c.JupyterHub.services = services
c.JupyterHub.load_roles = s["roles"]

# ---- spawn: profiles, budget, data variables (hub/*.py) ---------------------------------------
sys.path.insert(0, s["hubSnippetsDir"])
from profile_list import ProfileApi  # noqa: E402
from usage_quota import make_usage_quota_hook  # noqa: E402
from data_gateway_env import data_gateway_pre_spawn_hook  # noqa: E402

_tokens = s["serviceTokens"]
_urls = s["serviceUrls"]  # each service's own address and prefix, not the proxy's
profiles = ProfileApi(url=_urls["profile-api"], token=_tokens["profile-api"])
if hasattr(profiles, "options_form"):
    c.Spawner.options_form = profiles.options_form
if hasattr(profiles, "options_from_form"):
    c.Spawner.options_from_form = profiles.options_from_form
_usage_quota_hook = make_usage_quota_hook(
    url=_urls["usage-collector"],
    token=_tokens["usage-collector"],
    fail_open=True,
    chain=profiles.pre_spawn_hook,
)
c.DataGatewayEnv.url = _urls["data-gateway"]


async def hubside_pre_spawn_hook(spawner):
    # One hook, three steps: the profile check and overrides, then the budget, then the data variables.
    await _usage_quota_hook(spawner)
    await data_gateway_pre_spawn_hook(spawner)


c.Spawner.pre_spawn_hook = hubside_pre_spawn_hook
