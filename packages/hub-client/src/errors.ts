import createError from '@fastify/error';

/**
 * Errors every service shares. Each carries a stable `code` and an HTTP status, so the one
 * error handler in service-kit renders them as `{statusCode, error, message, code}`.
 */

export const HubNotConfiguredError = createError(
  'HUBSIDE_ERR_HUB_NOT_CONFIGURED',
  'No JupyterHub is connected. Set JUPYTERHUB_API_URL (e.g. http://127.0.0.1:8081/hub/api) and JUPYTERHUB_API_TOKEN (a hub API token for this service), or run it as a hub-managed service.',
  503,
);

export const HubUnavailableError = createError(
  'HUBSIDE_ERR_HUB_UNAVAILABLE',
  'JupyterHub API is unavailable (%s). Try again shortly.',
  503,
);

export const AuthRequiredError = createError(
  'HUBSIDE_ERR_AUTH_REQUIRED',
  'Authentication required: send "Authorization: token <JupyterHub API token>" or log in through the hub.',
  401,
);

export const MalformedAuthorizationError = createError(
  'HUBSIDE_ERR_AUTH_MALFORMED',
  'Malformed Authorization header: %s. Expected "token <t>" or "Bearer <t>".',
  401,
);

export const InvalidTokenError = createError(
  'HUBSIDE_ERR_AUTH_INVALID_TOKEN',
  'The token is invalid or expired.',
  401,
);

export const ForbiddenError = createError('HUBSIDE_ERR_FORBIDDEN', '%s', 403);

/** A non-2xx answer from the hub that is not an outage (4xx). */
export class HubApiError extends Error {
  override readonly name = 'HubApiError';
  readonly status: number;
  readonly method: string;
  readonly path: string;
  readonly hubMessage: string | undefined;

  constructor(method: string, path: string, status: number, hubMessage: string | undefined) {
    super(`JupyterHub ${method} ${path} answered ${status}${hubMessage ? `: ${hubMessage}` : ''}`);
    this.status = status;
    this.method = method;
    this.path = path;
    this.hubMessage = hubMessage;
  }
}
