import type { PGlite, Results } from '@electric-sql/pglite';
import { CompiledQuery, PostgresAdapter, PostgresIntrospector, PostgresQueryCompiler } from 'kysely';
import type {
  DatabaseConnection,
  DatabaseIntrospector,
  Dialect,
  DialectAdapter,
  Driver,
  Kysely,
  QueryCompiler,
  QueryResult,
  TransactionSettings,
} from 'kysely';

// Our own PGlite dialect rather than kysely-pglite-dialect's. That one does serialize access to
// the single PGlite connection, but: a query waiting for the connection waits forever (so using
// `db` instead of `trx` inside a transaction hangs silently instead of failing), queued queries
// hang forever after destroy(), `read only` transactions are silently read-write, 0-row
// UPDATE/DELETE report no row count, savepoints are unsupported and multi-statement SQL without
// parameters fails where node-postgres runs it. Each of those would make code that passes on
// PGlite behave differently on Postgres, or the other way round.

export interface PGliteDialectOptions {
  /** How long a query may wait for the single connection before failing (ms). */
  acquireTimeoutMs: number;
  /** Told when a connection comes back still inside a transaction (we roll it back). */
  onLeakedTransaction?: () => void;
}

const MUTATION_NODES = new Set(['InsertQueryNode', 'UpdateQueryNode', 'DeleteQueryNode', 'MergeQueryNode']);

class PGliteConnection implements DatabaseConnection {
  readonly #pg: PGlite;

  constructor(pg: PGlite) {
    this.#pg = pg;
  }

  async executeQuery<R>(compiledQuery: CompiledQuery): Promise<QueryResult<R>> {
    // node-postgres uses the simple protocol when there are no parameters, which allows several
    // statements in one string; PGlite's query() always uses the extended protocol, exec() not.
    const result: Results<R> | undefined =
      compiledQuery.parameters.length === 0
        ? ((await this.#pg.exec(compiledQuery.sql)).at(-1) as Results<R> | undefined)
        : await this.#pg.query<R>(compiledQuery.sql, [...compiledQuery.parameters]);
    const rows = result?.rows ?? [];
    const affected = result?.affectedRows ?? 0;
    if (MUTATION_NODES.has(compiledQuery.query.kind) || affected > 0) {
      return { rows, numAffectedRows: BigInt(affected) };
    }
    return { rows };
  }

  async *streamQuery<R>(compiledQuery: CompiledQuery, chunkSize: number): AsyncIterableIterator<QueryResult<R>> {
    if (!Number.isInteger(chunkSize) || chunkSize <= 0) {
      throw new Error('chunkSize must be a positive integer');
    }
    // PGlite has no cursors; the whole result is in memory anyway.
    const { rows } = await this.executeQuery<R>(compiledQuery);
    for (let i = 0; i < rows.length; i += chunkSize) {
      yield { rows: rows.slice(i, i + chunkSize) };
    }
  }
}

interface Waiter {
  grant(): void;
  timer: NodeJS.Timeout;
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/**
 * PGlite is one Postgres backend in this process: one session, one transaction at a time.
 * The driver hands that single connection to one kysely user at a time (FIFO), which is what
 * makes concurrent queries and transactions safe.
 */
export class PGliteDriver implements Driver {
  readonly #pg: PGlite;
  readonly #connection: PGliteConnection;
  readonly #options: PGliteDialectOptions;
  readonly #waiters: Waiter[] = [];
  #busy = false;
  #closed = false;

  constructor(pg: PGlite, options: PGliteDialectOptions) {
    this.#pg = pg;
    this.#connection = new PGliteConnection(pg);
    this.#options = options;
  }

  async init(): Promise<void> {}

  acquireConnection(): Promise<DatabaseConnection> {
    if (this.#closed) return Promise.reject(new Error('The embedded database is closed'));
    if (!this.#busy) {
      this.#busy = true;
      return Promise.resolve(this.#connection);
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        grant: () => {
          clearTimeout(waiter.timer);
          resolve(this.#connection);
        },
        timer: setTimeout(() => {
          const index = this.#waiters.indexOf(waiter);
          if (index !== -1) this.#waiters.splice(index, 1);
          reject(
            new Error(
              `Timed out after ${this.#options.acquireTimeoutMs} ms waiting for the embedded database ` +
                `connection. PGlite has a single connection: a query on \`db\` inside ` +
                `\`db.transaction().execute(trx => ...)\` waits for the transaction itself; use \`trx\`.`,
            ),
          );
        }, this.#options.acquireTimeoutMs),
      };
      this.#waiters.push(waiter);
    });
  }

  async releaseConnection(): Promise<void> {
    // A transaction left open would swallow every later query on the only session, and its
    // writes would vanish on close: end it here rather than hand it on.
    try {
      if (!this.#pg.closed && this.#pg.isInTransaction()) {
        this.#options.onLeakedTransaction?.();
        await this.#pg.exec('rollback');
      }
    } finally {
      // Hand over even if the rollback failed; otherwise every waiter would hang.
      const next = this.#waiters.shift();
      if (next) next.grant();
      else this.#busy = false;
    }
  }

  async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    let statement = 'start transaction';
    if (settings.isolationLevel) statement += ` isolation level ${settings.isolationLevel}`;
    if (settings.accessMode) statement += ` ${settings.accessMode}`;
    await connection.executeQuery(CompiledQuery.raw(statement));
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('commit'));
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('rollback'));
  }

  async savepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(`savepoint ${quoteIdent(name)}`));
  }

  async rollbackToSavepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(`rollback to savepoint ${quoteIdent(name)}`));
  }

  async releaseSavepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(`release savepoint ${quoteIdent(name)}`));
  }

  async destroy(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#busy) {
      // Queue behind the work already holding or awaiting the connection, so closing never cuts
      // a transaction in half; give up waiting after the usual timeout.
      await new Promise<void>((resolve) => {
        const waiter: Waiter = {
          grant: () => {
            clearTimeout(waiter.timer);
            resolve();
          },
          timer: setTimeout(() => {
            const index = this.#waiters.indexOf(waiter);
            if (index !== -1) this.#waiters.splice(index, 1);
            resolve();
          }, this.#options.acquireTimeoutMs),
        };
        this.#waiters.push(waiter);
      });
    }
    if (!this.#pg.closed) await this.#pg.close();
  }
}

export class PGliteDialect implements Dialect {
  readonly #pg: PGlite;
  readonly #options: PGliteDialectOptions;

  constructor(pg: PGlite, options: PGliteDialectOptions) {
    this.#pg = pg;
    this.#options = options;
  }

  createAdapter(): DialectAdapter {
    return new PostgresAdapter();
  }

  createDriver(): Driver {
    return new PGliteDriver(this.#pg, this.#options);
  }

  createQueryCompiler(): QueryCompiler {
    return new PostgresQueryCompiler();
  }

  createIntrospector(db: Kysely<any>): DatabaseIntrospector {
    return new PostgresIntrospector(db);
  }
}
