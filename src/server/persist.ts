/**
 * Persistence of the configuration applied over the API (state.file): after every change the
 * whole document (GetConfig's Config, plus the drain flag) is written to a temporary file in the
 * same directory, fsynced, renamed over the state file and the directory fsynced. A crash at any
 * point leaves either the previous document or the new one, never a mix. At start the document is
 * applied with ApplyConfig's own validation and diff.
 *
 * Changes are coalesced: a burst (one ApplyConfig is many dataplane calls) is saved once, on the
 * next turn of the event loop.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Config } from '../gen/retrace/v1/config';
import type { Logger } from '../log';
import type { ConfigManager } from './config/apply';

interface StateDocument {
  version: 1;
  savedAt: string;
  drained: boolean;
  config: unknown;
}

export class StateError extends Error {
  constructor(
    readonly file: string,
    reason: string,
  ) {
    super(`${file}: ${reason}`);
  }
}

export class StatePersister {
  private pending = false;
  private writes = 0;

  constructor(
    readonly file: string,
    private readonly manager: ConfigManager,
    private readonly log: Logger,
  ) {}

  /** Number of documents written so far (tests, metrics). */
  get saved(): number {
    return this.writes;
  }

  /** Asks for a save on the next turn of the event loop (coalescing bursts). */
  schedule(): void {
    if (this.pending) return;
    this.pending = true;
    setImmediate(() => {
      this.pending = false;
      try {
        this.save();
      } catch (e) {
        this.log.error({ err: e, file: this.file }, 'cannot persist the configuration');
      }
    });
  }

  /** Writes the current document now: temp file, fsync, rename, fsync of the directory. */
  save(): void {
    const doc: StateDocument = {
      version: 1,
      savedAt: new Date().toISOString(),
      drained: this.manager.drained,
      config: Config.toJSON(this.manager.getConfig()),
    };
    const dir = path.dirname(this.file);
    const tmp = path.join(dir, `.${path.basename(this.file)}.tmp-${process.pid}`);
    const fd = fs.openSync(tmp, 'w', 0o600);
    try {
      fs.writeSync(fd, `${JSON.stringify(doc, null, 2)}\n`);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, this.file);
    const dfd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(dfd);
    } finally {
      fs.closeSync(dfd);
    }
    this.writes++;
  }

  /**
   * Applies the saved document, if any. Leftover temp files of an interrupted save are removed
   * (the state file itself is always complete). Throws StateError naming the file.
   */
  restore(): { restored: boolean; drained: boolean } {
    const dir = path.dirname(this.file);
    const base = path.basename(this.file);
    for (const f of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
      if (f.startsWith(`.${base}.tmp-`)) fs.rmSync(path.join(dir, f), { force: true });
    }
    if (!fs.existsSync(this.file)) return { restored: false, drained: false };
    if (fs.statSync(this.file).isDirectory()) {
      throw new StateError(this.file, `is a directory, not a state file: set state.file to a file path (e.g. ${path.join(this.file, 'state.json')})`);
    }
    // The appliance does not start over a document it cannot apply (it would overwrite it with an
    // empty one at the first change): say how to get going again without losing it.
    const remedy = `; fix the file, or move it aside (mv ${this.file} ${this.file}.bad) to start with an empty configuration`;
    let doc: StateDocument;
    try {
      doc = JSON.parse(fs.readFileSync(this.file, 'utf8')) as StateDocument;
    } catch (e) {
      throw new StateError(this.file, `not valid JSON (${(e as Error).message})${remedy}`);
    }
    if (doc === null || typeof doc !== 'object' || doc.version !== 1 || typeof doc.config !== 'object' || doc.config === null) {
      throw new StateError(this.file, `not a retrace state document (version 1 with a config)${remedy}`);
    }
    try {
      this.manager.apply({ config: Config.fromJSON(doc.config), dryRun: false });
    } catch (e) {
      const details = (e as { details?: string; message?: string }).details ?? (e as Error).message;
      throw new StateError(this.file, `cannot apply the saved configuration: ${details}${remedy}`);
    }
    if (doc.drained) this.manager.drainAll();
    return { restored: true, drained: doc.drained };
  }
}
