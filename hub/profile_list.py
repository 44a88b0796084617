"""Hubside profile-api glue for a JupyterHub config (jupyterhub_config.py or z2jh hub.extraConfig).

Two pieces, both backed by one small client:

* ``profile_list`` -- a KubeSpawner ``profile_list`` callable. It asks profile-api for the list of
  one user (``GET {prefix}api/users/{name}/profiles``) with the service token, with a timeout.
  While profile-api is down it serves the last good list of that user (never another user's:
  lists are filtered by group).
* ``pre_spawn_hook`` -- resolves ``spawner.user_options`` through profile-api
  (``POST {prefix}api/users/{name}/resolve``). That is the server-side check that stops REST API
  users from bypassing group limits: an invalid selection fails the spawn with profile-api's
  message. KubeSpawner then applies the overrides itself from the list above. Other spawners get
  what they understand applied here: ``environment`` (merged), ``mem_limit``, ``cpu_limit``, and
  ``image`` as the environment variable ``HUBSIDE_IMAGE``; other keys are logged and ignored.
  While profile-api is down, the selection is checked and merged locally against the user's last
  good list, with KubeSpawner's rules.

Usage::

    import sys; sys.path.insert(0, "/srv/hubside/hub")
    from profile_list import ProfileApi
    profiles = ProfileApi(
        url="http://profile-api:10102/services/profile-api/",   # the service's own URL and prefix
        token=os.environ["HUBSIDE_PROFILE_API_TOKEN"],          # the profile-api service's api_token
    )
    c.KubeSpawner.profile_list = profiles.profile_list           # KubeSpawner only
    c.Spawner.pre_spawn_hook = profiles.pre_spawn_hook
    c.Spawner.options_form = profiles.options_form               # profile-api's form on /hub/spawn
    c.Spawner.options_from_form = profiles.options_from_form

The token's owner needs ``read:users`` and ``access:services!service=profile-api``.
Works with the Python that runs JupyterHub 3 (tornado is always there).
"""

import copy
import json
import logging
import re
from urllib.parse import quote

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

log = logging.getLogger("hubside.profile_list")

# Keys a non-Kubernetes spawner can honour; everything else only means something to KubeSpawner.
_APPLICABLE = ("environment", "mem_limit", "cpu_limit", "image")
# profile-api's default bound on unlisted values; it keeps a bad regex from running long here too.
MAX_UNLISTED_LENGTH = 512
# Where the resolution is recorded for billing (docs/community-model.md), and what is recorded.
HUBSIDE_KEY = "hubside"
HUBSIDE_FIELDS = ("profile", "options", "price_per_hour", "currency", "resources", "profile_version")
# profile-api refuses unlisted values with these; with them gone, Python's "$" and "." agree with JavaScript's.
_CONTROL = re.compile("[\u0000-\u001f\u007f-\u009f\u2028\u2029]")


class ProfileApiUnavailable(Exception):
    """profile-api did not answer (down, timeout, 5xx)."""


class Refused(web.HTTPError):
    """A refusal whose message is the refuser's own: the hub's spawn page shows ``str(error)``."""

    def __str__(self):
        return self.log_message or super().__str__()


FIELD_PREFIX = "hubside-option:"
UNLISTED = "--unlisted-choice"


class ProfileApi:
    def __init__(self, url, token, timeout=5.0, image_env="HUBSIDE_IMAGE", fallback_profile_list=None):
        self.url = url if url.endswith("/") else url + "/"
        self.token = token
        self.timeout = float(timeout)
        self.image_env = image_env
        # For a user profile-api never answered for while it is down: nothing is safer than guessing.
        self.fallback_profile_list = fallback_profile_list or []
        self._last_good = {}

    async def _call(self, method, path, body=None):
        req = HTTPRequest(
            self.url + path,
            method=method,
            headers={"Authorization": "token " + self.token, "Content-Type": "application/json", "Accept": "application/json"},
            body=None if body is None else json.dumps(body),
            connect_timeout=self.timeout,
            request_timeout=self.timeout,
        )
        try:
            resp = await AsyncHTTPClient().fetch(req, raise_error=False)
        except Exception as e:  # connection refused, timeout, DNS ...
            raise ProfileApiUnavailable(str(e)) from e
        if resp.code == 599 or resp.code >= 500:
            raise ProfileApiUnavailable("profile-api answered %s" % resp.code)
        try:
            data = json.loads(resp.body or b"null")
        except ValueError as e:
            raise ProfileApiUnavailable("profile-api sent no JSON") from e
        return resp.code, data

    async def _call_text(self, method, path):
        req = HTTPRequest(
            self.url + path,
            method=method,
            headers={"Authorization": "token " + self.token, "Accept": "text/html"},
            connect_timeout=self.timeout,
            request_timeout=self.timeout,
        )
        try:
            resp = await AsyncHTTPClient().fetch(req, raise_error=False)
        except Exception as e:
            raise ProfileApiUnavailable(str(e)) from e
        if resp.code == 599 or resp.code >= 500:
            raise ProfileApiUnavailable("profile-api answered %s" % resp.code)
        return resp.code, (resp.body or b"").decode("utf8", "replace")

    async def fetch_profiles(self, username):
        """The user's profile list; the last good one while profile-api is unavailable."""
        try:
            code, data = await self._call("GET", "api/users/%s/profiles" % quote(username, safe=""))
            if code == 200 and isinstance(data, list):
                self._last_good[username] = data
                return copy.deepcopy(data)
            log.warning("profile-api refused the profile list of %s (%s): %s", username, code, _message(data))
        except ProfileApiUnavailable as e:
            log.warning("profile-api unavailable (%s); serving the last good profile list of %s", e, username)
        return copy.deepcopy(self._last_good.get(username, self.fallback_profile_list))

    async def profile_list(self, spawner):
        """A KubeSpawner ``profile_list`` callable."""
        return await self.fetch_profiles(spawner.user.name)

    async def resolve(self, username, user_options):
        """profile-api's resolution of ``user_options``; raises tornado HTTPError for a bad selection."""
        try:
            code, data = await self._call("POST", "api/users/%s/resolve" % quote(username, safe=""), user_options or {})
        except ProfileApiUnavailable as e:
            profiles = self._last_good.get(username)
            if profiles is None:
                profiles = await self.fetch_profiles(username)
            log.warning("profile-api unavailable (%s); checking the selection of %s against the last good list", e, username)
            return resolve_locally(profiles, user_options or {})
        if code == 200:
            return data
        raise Refused(code if 400 <= code < 500 else 502, _message(data), reason=_message(data)[:200])

    async def options_form(self, spawner):
        """``c.Spawner.options_form``: profile-api's form for this user, shown on the hub's own /hub/spawn.

        While profile-api is unavailable the form is empty, so the hub starts the default profile
        (checked by the pre-spawn hook against the user's last good list).
        """
        try:
            code, body = await self._call_text("GET", "api/users/%s/spawn-form" % quote(spawner.user.name, safe=""))
        except ProfileApiUnavailable as e:
            spawner.log.warning("profile-api unavailable (%s); no profile form for %s", e, spawner.user.name)
            return ""
        if code != 200:
            spawner.log.warning("profile-api refused the form of %s (%s)", spawner.user.name, code)
            return ""
        return body

    @staticmethod
    def options_from_form(formdata):
        """``c.Spawner.options_from_form``: the selected profile's fields, and nothing else.

        An option's unlisted value is used only when its menu says so: a value typed into a field
        the page hides is never what starts the server.
        """
        def first(key):
            values = formdata.get(key) or [""]
            return values[0] if isinstance(values[0], str) else ""

        slug = first("profile")
        options = {"profile": slug} if slug else {}
        for key in formdata:
            if not key.startswith(FIELD_PREFIX) or key.endswith(UNLISTED):
                continue
            try:
                owner, name = json.loads(bytes.fromhex(key[len(FIELD_PREFIX):]).decode("utf8"))
            except (ValueError, TypeError, UnicodeDecodeError):
                continue
            if owner != slug or not isinstance(name, str):
                continue
            value = first(key)
            if value == UNLISTED:
                options[name + UNLISTED] = first(key + UNLISTED)
            elif value:
                options[name] = value
        return options

    async def pre_spawn_hook(self, spawner):
        username = spawner.user.name
        # What the person chose, without what they may not choose: the "hubside" key is ours.
        chosen = {k: v for k, v in dict(spawner.user_options or {}).items() if k != HUBSIDE_KEY}
        resolution = await self.resolve(username, chosen)
        spawner.log.info("profile-api: %s starts profile %s", username, resolution.get("profile"))
        record_resolution(spawner, chosen, resolution)
        if hasattr(spawner, "profile_list") and hasattr(spawner, "_load_profile"):
            # KubeSpawner applies the overrides itself, from the list it got from profile_list.
            return
        apply_overrides(spawner, resolution.get("kubespawner_override") or {}, self.image_env)


def record_resolution(spawner, chosen, resolution):
    """Record what was resolved in ``user_options["hubside"]``, overwriting whatever the request carried.

    The hub shows ``spawner.user_options`` in its REST API and keeps ``orm_spawner.user_options``
    in its database; JupyterHub 3.0 makes them one dict before this hook runs, and SQLAlchemy only
    saves a JSON column that is *assigned*, so a new dict is assigned to both (the hub commits it
    when the spawn goes on).
    """
    record = {key: resolution.get(key) for key in HUBSIDE_FIELDS}
    options = dict(chosen)
    options[HUBSIDE_KEY] = record
    spawner.user_options = options
    orm_spawner = getattr(spawner, "orm_spawner", None)
    if orm_spawner is not None:
        orm_spawner.user_options = dict(options)


def apply_overrides(spawner, override, image_env="HUBSIDE_IMAGE"):
    """Apply to a non-Kubernetes spawner what it understands; log the rest."""
    env = dict(spawner.environment or {})
    for key, value in override.items():
        if key == "environment" and isinstance(value, dict):
            for k, v in value.items():
                if v is None:
                    env.pop(k, None)
                else:
                    env[str(k)] = str(v)
        elif key == "image":
            env[image_env] = str(value)
        elif key in ("mem_limit", "cpu_limit"):
            setattr(spawner, key, value)
        else:
            spawner.log.info("profile-api: %s does not apply %r; ignored", type(spawner).__name__, key)
    spawner.environment = env


def _message(data):
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return data["message"]
    return "profile-api refused the request"


def _merge(target, update):
    # kubespawner.utils.recursive_update: dicts merge, None deletes, anything else replaces.
    for k, v in update.items():
        if isinstance(v, dict):
            if not isinstance(target.get(k), dict):
                target[k] = {}
            _merge(target[k], v)
        elif v is None:
            target.pop(k, None)
        else:
            target[k] = copy.deepcopy(v)


def _apply(target, override):
    for k, v in override.items():
        if isinstance(v, dict):
            if not isinstance(target.get(k), dict):
                target[k] = {}
            _merge(target[k], v)
        else:
            target[k] = copy.deepcopy(v)


def _format(obj, value):
    if isinstance(obj, str):
        return re.sub(r"\{\{|\}\}|\{value\}", lambda m: {"{{": "{", "}}": "}"}.get(m.group(0), value), obj)
    if isinstance(obj, list):
        return [_format(x, value) for x in obj]
    if isinstance(obj, dict):
        return {_format(k, value): _format(v, value) for k, v in obj.items()}
    return obj


def resolve_locally(profiles, user_options):
    """KubeSpawner's checks and merge against a user's (already group-filtered) list."""
    def bad(code, msg):
        return Refused(code, msg, reason=msg[:200])

    slug = user_options.get("profile")
    if slug:
        profile = next((p for p in profiles if p.get("slug") == slug), None)
        if profile is None:
            raise bad(404, "no such profile: %s" % slug)
    else:
        profile = next((p for p in profiles if p.get("default")), profiles[0] if profiles else None)
        if profile is None:
            raise bad(403, "no profile is available to your groups")
    merged = {}
    _apply(merged, profile.get("kubespawner_override") or {})
    options = {}
    prices = [profile.get("price_per_hour")]
    for name, option in (profile.get("profile_options") or {}).items():
        unlisted = user_options.get(name + "--unlisted-choice")
        choice = user_options.get(name)
        if unlisted:
            u = option.get("unlisted_choice") or {}
            if not u.get("enabled"):
                raise bad(400, "option %s accepts no unlisted choice" % name)
            if len(str(unlisted)) > MAX_UNLISTED_LENGTH:
                raise bad(400, "%s--unlisted-choice is longer than %d characters" % (name, MAX_UNLISTED_LENGTH))
            if _CONTROL.search(str(unlisted)):
                raise bad(400, "%s--unlisted-choice must not contain line breaks or control characters" % name)
            regex = u.get("validation_regex")
            if regex and not re.match(regex, str(unlisted)):
                raise bad(422, u.get("validation_message") or "%s--unlisted-choice does not match %s" % (name, regex))
            # As KubeSpawner's _load_profile: values are formatted, top-level keys are not.
            override = {k: _format(v, str(unlisted)) for k, v in (u.get("kubespawner_override") or {}).items()}
            options[name] = str(unlisted)
        elif choice:
            c = (option.get("choices") or {}).get(choice)
            if c is None:
                raise bad(404, "no such choice for %s: %s" % (name, choice))
            override = c.get("kubespawner_override") or {}
            options[name] = choice
            prices.append(c.get("price_per_hour"))
        else:
            choices = list((option.get("choices") or {}).values())
            keys = list((option.get("choices") or {}).keys())
            key = next((k for k in keys if option["choices"][k].get("default")), keys[0] if keys else None)
            if key is None:
                raise bad(400, "%s has no default choice" % name)
            c = option["choices"][key]
            override = c.get("kubespawner_override") or {}
            options[name] = key
            prices.append(c.get("price_per_hour"))
        _apply(merged, override)
    # Currency, resources and version are profile-api's to say; while it is down they stay unknown.
    return {"profile": profile.get("slug"), "options": options, "price_per_hour": price_text(prices), "kubespawner_override": merged, "local": True}


def price_text(parts):
    """profile-api's priceText: the sum in millionths, as a decimal string; None when nothing has a price."""
    micros = None
    for p in parts:
        if isinstance(p, (int, float)) and not isinstance(p, bool):
            micros = (micros or 0) + int(round(p * 1e6))
    if micros is None:
        return None
    whole, frac = divmod(micros, 1000000)
    frac = ("%06d" % frac).rstrip("0")
    return "%d.%s" % (whole, frac) if frac else str(whole)
