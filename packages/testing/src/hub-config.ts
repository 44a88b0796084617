// Everything variable goes into harness.json and the Python only reads it, so no user, group or
// service name is ever pasted into Python source.

export const HARNESS_SERVICE = 'hubside-harness';
export const MARKER_VAR = 'HUBSIDE_HARNESS_ID';
export const WATCH_FD_VAR = 'HUBSIDE_HARNESS_WATCH_FD';

/** Scopes the harness service holds: enough for every RunningHub method, without `shutdown`. */
export const HARNESS_SCOPES = [
  'admin:users',
  'admin:groups',
  'admin:servers',
  'tokens',
  'read:roles',
  'list:users',
  'list:services',
  'read:services',
  'read:hub',
  'access:servers',
  'access:services',
  'proxy',
  'read:metrics',
];

export interface HarnessSettings {
  bindUrl: string;
  hubBindUrl: string;
  proxyApiUrl: string;
  proxyAuthToken: string;
  marker: string;
  password: string | null;
  singleuserCommand: string[];
  services: Record<string, unknown>[];
  roles: Record<string, unknown>[];
}

export function renderConfig(extraConfig: string | undefined): string {
  return `# Written by @hubside/testing for one test hub. Settings are in harness.json beside this file.
import json
import os

c = get_config()  # noqa

_here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_here, 'harness.json'), encoding='utf-8') as _f:
    _h = json.load(_f)

c.JupyterHub.bind_url = _h['bindUrl']
c.JupyterHub.hub_bind_url = _h['hubBindUrl']
c.JupyterHub.db_url = 'sqlite:///' + os.path.join(_here, 'jupyterhub.sqlite')
c.JupyterHub.cookie_secret_file = os.path.join(_here, 'jupyterhub_cookie_secret')
c.JupyterHub.pid_file = os.path.join(_here, 'jupyterhub.pid')
c.JupyterHub.log_level = 'INFO'

c.ConfigurableHTTPProxy.command = ['/usr/bin/configurable-http-proxy']
c.ConfigurableHTTPProxy.api_url = _h['proxyApiUrl']
c.ConfigurableHTTPProxy.auth_token = _h['proxyAuthToken']
c.ConfigurableHTTPProxy.pid_file = os.path.join(_here, 'proxy.pid')

c.JupyterHub.authenticator_class = 'dummy'
if _h['password']:
    c.DummyAuthenticator.password = _h['password']

# Tests ask for the page they want; an automatic spawn after login would surprise them.
c.JupyterHub.redirect_to_server = False
c.JupyterHub.allow_named_servers = True

c.JupyterHub.spawner_class = 'simple'
c.SimpleLocalProcessSpawner.home_dir_template = os.path.join(_here, 'home', '{username}')
c.Spawner.cmd = _h['singleuserCommand']
c.Spawner.ip = '127.0.0.1'
c.Spawner.environment = {'${MARKER_VAR}': _h['marker']}
if os.getuid() == 0:
    # The notebook server refuses to run as root, and CI containers often are root.
    c.Spawner.args = ['--allow-root']
c.Spawner.start_timeout = 30
c.Spawner.http_timeout = 30
c.Spawner.poll_interval = 2
# A test stopping a server should not wait out the production-sized grace periods.
c.LocalProcessSpawner.interrupt_timeout = 2
c.LocalProcessSpawner.term_timeout = 2
c.LocalProcessSpawner.kill_timeout = 2

c.JupyterHub.services = _h['services']
c.JupyterHub.load_roles = _h['roles']


# ---- extraConfig from the test ----
${extraConfig ?? ''}
`;
}
