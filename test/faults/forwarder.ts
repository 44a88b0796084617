import { createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { connect } from 'node:net';

/**
 * A loopback TCP forwarder put between a service and what it depends on, so a test can cut the
 * network (connections refused, open ones reset) and restore it on the same port.
 */
export interface Forwarder {
  port: number;
  /** Open connections right now (client side); a pile-up of sockets shows here. */
  open(): number;
  /** Stop listening and reset every open connection: the dependency is gone. */
  unplug(): Promise<void>;
  /** Listen again on the same port. */
  replug(): Promise<void>;
  close(): Promise<void>;
}

export async function startForwarder(targetPort: number, targetHost = '127.0.0.1'): Promise<Forwarder> {
  const sockets = new Set<Socket>();
  let clients = 0;
  let server: Server | undefined;
  let port = 0;

  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const s = createServer((client) => {
        sockets.add(client);
        clients += 1;
        let counted = true;
        const upstream = connect(targetPort, targetHost);
        sockets.add(upstream);
        client.pipe(upstream).pipe(client);
        const done = () => {
          if (counted) clients -= 1;
          counted = false;
          client.destroy();
          upstream.destroy();
          sockets.delete(client);
          sockets.delete(upstream);
        };
        client.on('error', done).on('close', done);
        upstream.on('error', done).on('close', done);
      });
      s.once('error', reject);
      s.listen(port, '127.0.0.1', () => {
        port = (s.address() as AddressInfo).port;
        server = s;
        resolve();
      });
    });

  const stop = () =>
    new Promise<void>((resolve) => {
      const s = server;
      server = undefined;
      for (const sock of sockets) sock.resetAndDestroy();
      sockets.clear();
      if (!s) return resolve();
      s.close(() => resolve());
    });

  await listen();
  return {
    get port() {
      return port;
    },
    open: () => clients,
    unplug: stop,
    replug: listen,
    close: stop,
  };
}
