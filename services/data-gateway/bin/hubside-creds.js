#!/usr/bin/env node
// hubside-creds: short-lived object-storage credentials from the Hubside data-gateway.
//
//   hubside-creds [--dataset NAME] [--access read|read-write] [--url GATEWAY_URL]
//       prints AWS credential_process JSON (Version 1). Use it in ~/.aws/config:
//         [default]
//         credential_process = hubside-creds --dataset scratch
//   hubside-creds serve [--port N] [--dataset NAME] [--url GATEWAY_URL]
//       a loopback relay in the container-credentials format (botocore accepts that only from
//       loopback). Prints the two variables to export, then serves until killed.
//
// The hub token comes from JUPYTERHUB_API_TOKEN (set in every single-user server) and is
// never printed. The gateway URL comes from --url or HUBSIDE_GATEWAY_URL; the dataset from
// --dataset or HUBSIDE_CREDS_DATASET.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

function fail(message) {
  process.stderr.write(`hubside-creds: ${message}\n`);
  process.exit(1);
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    dataset: { type: 'string' },
    access: { type: 'string' },
    url: { type: 'string' },
    port: { type: 'string', default: '0' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help) {
  process.stdout.write('usage: hubside-creds [serve] [--dataset NAME] [--access read|read-write] [--url GATEWAY_URL] [--port N]\n');
  process.exit(0);
}
const token = process.env.JUPYTERHUB_API_TOKEN;
if (!token) fail('JUPYTERHUB_API_TOKEN is not set (it is set in every JupyterHub single-user server)');
const base = values.url ?? process.env.HUBSIDE_GATEWAY_URL;
if (!base) fail('set HUBSIDE_GATEWAY_URL or pass --url (e.g. https://hub.example.org/services/data-gateway/)');
const dataset = values.dataset ?? process.env.HUBSIDE_CREDS_DATASET;
if (!dataset) fail('pass --dataset or set HUBSIDE_CREDS_DATASET');
if (values.access && values.access !== 'read' && values.access !== 'read-write') fail('--access must be read or read-write');

async function fetchAws(name) {
  const url = new URL(`api/credentials/${encodeURIComponent(name)}/aws`, base.endsWith('/') ? base : `${base}/`);
  if (values.access) url.searchParams.set('access', values.access);
  let res;
  try {
    res = await fetch(url, { headers: { authorization: `token ${token}` }, signal: AbortSignal.timeout(30_000) });
  } catch (err) {
    throw new Error(`cannot reach the data-gateway at ${url.origin}: ${err.cause?.code ?? err.message}`);
  }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw Object.assign(new Error(`the data-gateway answered ${res.status}: ${body.message ?? res.statusText}`), { status: res.status });
  return body;
}

if (positionals[0] === 'serve') {
  const secret = randomBytes(24).toString('base64url');
  const expected = Buffer.from(secret);
  const server = createServer(async (req, res) => {
    const given = Buffer.from(String(req.headers.authorization ?? ''));
    const send = (status, body) => {
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(body));
    };
    // Any local process can reach loopback; the token keeps other users on a shared machine out.
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return send(401, { message: 'bad relay token' });
    const path = new URL(req.url ?? '/', 'http://relay').pathname;
    const name = path === '/' ? dataset : decodeURIComponent(path.slice(1));
    try {
      send(200, await fetchAws(name));
    } catch (err) {
      send(err.status && err.status < 500 ? err.status : 502, { message: err.message });
    }
  });
  server.listen(Number(values.port), '127.0.0.1', () => {
    const { port } = server.address();
    process.stdout.write(
      `${JSON.stringify({ AWS_CONTAINER_CREDENTIALS_FULL_URI: `http://127.0.0.1:${port}/${encodeURIComponent(dataset)}`, AWS_CONTAINER_AUTHORIZATION_TOKEN: secret })}\n`,
    );
  });
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else if (positionals.length > 0) {
  fail(`unknown command ${JSON.stringify(positionals[0])}; try --help`);
} else {
  try {
    const c = await fetchAws(dataset);
    process.stdout.write(
      `${JSON.stringify({ Version: 1, AccessKeyId: c.AccessKeyId, SecretAccessKey: c.SecretAccessKey, SessionToken: c.Token, Expiration: c.Expiration })}\n`,
    );
  } catch (err) {
    fail(err.message);
  }
}
