/**
 * `export`: an extension tree as a plain tar (tar-stream), the form
 * `importctl import-tar --class=sysext` accepts: top-level entries `usr/...`,
 * every entry owned by root, modes and symlinks as in the tree.
 */
import {createReadStream, createWriteStream, lstatSync, readdirSync, readlinkSync, renameSync, rmSync, statSync} from 'node:fs'
import {basename, dirname, join, resolve} from 'node:path'
import {Transform, type Writable} from 'node:stream'
import {pipeline} from 'node:stream/promises'
import {type Header, type Pack, pack as tarPack} from 'tar-stream'
import {HelperError, fsError, usageError} from '../errors.js'
import {type Paths, DEFAULT_PATHS, readState} from './state.js'

export type ExportFormat = 'tar'

export interface ExportSource {
  /** The extension name: the managed NAME, else the tree's release file NAME, else its directory name. */
  name: string
  kind: 'managed' | 'path'
  /** The tree that is exported. */
  tree: string
}

/** One tar entry, planned from an lstat of the tree (pure data: tests compare it). */
export interface ExportEntry {
  /** Relative path, '/'-separated; directories end with '/'. */
  name: string
  type: 'directory' | 'file' | 'symlink'
  mode: number
  mtime: Date
  size: number
  linkname?: string
  /** Absolute path of the file to read (type 'file'). */
  source?: string
}

export interface ExportResult {
  name: string
  source: ExportSource
  format: ExportFormat
  /** The written file, or '-' for stdout. */
  output: string
  entries: number
  bytes: number
}

/**
 * NAME or PATH: an argument with a '/' (or '.', '..') is a path; otherwise a
 * managed NAME wins, then a directory of that name in the working directory.
 * A path's name is its release file's NAME (the default output is NAME.tar).
 */
export function resolveExportSource(arg: string, paths: Paths = DEFAULT_PATHS): ExportSource {
  const looksLikePath = arg.includes('/') || arg === '.' || arg === '..'
  if (!looksLikePath) {
    const record = readState(paths).extensions[arg]
    if (record) return {name: arg, kind: 'managed', tree: record.linkTarget}
  }
  const tree = resolve(arg)
  let isDir = false
  try {
    isDir = statSync(tree).isDirectory()
  } catch {}
  if (!isDir) {
    if (looksLikePath) throw new HelperError('TREE_NOT_FOUND', `Extension tree '${arg}' does not exist or is not a directory.`, {file: tree})
    throw new HelperError('EXPORT_NOT_FOUND', `'${arg}' is neither an extension sysext-helper manages nor a directory.`, {
      hint: "See 'sysext-helper list' for managed names, or pass the tree's path (e.g. ./ext).",
    })
  }
  return {name: releaseName(tree) ?? basename(tree), kind: 'path', tree}
}

/** NAME of the tree's only usr/lib/extension-release.d/extension-release.NAME, if exactly one. */
function releaseName(tree: string): string | undefined {
  try {
    const names = readdirSync(join(tree, 'usr/lib/extension-release.d')).filter((n) => n.startsWith('extension-release.')).map((n) => n.slice('extension-release.'.length))
    return names.length === 1 && names[0] ? names[0] : undefined
  } catch {
    return undefined
  }
}

/**
 * Every entry of `tree`, parents before children, names sorted (byte order) so
 * the same tree gives the same tarball. Hard links become separate regular
 * files; devices, FIFOs and sockets are refused (no sysext should carry them).
 */
export function planExport(tree: string): ExportEntry[] {
  const entries: ExportEntry[] = []
  const walk = (rel: string): void => {
    const dir = rel ? join(tree, rel) : tree
    let names: string[]
    try {
      names = readdirSync(dir).sort()
    } catch (error) {
      throw fsError('EXPORT_UNREADABLE', 'Cannot read directory', dir, error)
    }
    for (const n of names) {
      const relPath = rel ? `${rel}/${n}` : n
      const abs = join(tree, relPath)
      let st
      try {
        st = lstatSync(abs)
      } catch (error) {
        throw fsError('EXPORT_UNREADABLE', 'Cannot stat', abs, error)
      }
      const mode = st.mode & 0o7777
      if (st.isDirectory()) {
        entries.push({name: `${relPath}/`, type: 'directory', mode, mtime: st.mtime, size: 0})
        walk(relPath)
      } else if (st.isSymbolicLink()) {
        entries.push({name: relPath, type: 'symlink', mode: 0o777, mtime: st.mtime, size: 0, linkname: readlinkSync(abs)})
      } else if (st.isFile()) {
        entries.push({name: relPath, type: 'file', mode, mtime: st.mtime, size: st.size, source: abs})
      } else {
        throw new HelperError('EXPORT_UNSUPPORTED_FILE', `'${abs}' is a device, FIFO or socket; an extension tree cannot carry it.`, {
          file: abs,
          hint: 'Remove it from the tree (sysext-helper validate names every such file).',
        })
      }
    }
  }
  walk('')
  return entries
}

/** Writes the tar of `entries` to `out`; resolves with the number of bytes written. */
export async function writeTar(entries: readonly ExportEntry[], out: Writable): Promise<number> {
  const pack = tarPack()
  let bytes = 0
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      bytes += chunk.length
      callback(null, chunk)
    },
  })
  // tar-stream's streams are streamx streams: connect them with their own pipe().
  pack.on('error', (error: Error) => counter.destroy(error))
  pack.pipe(counter)
  let outputError: unknown
  const done = pipeline(counter, out).catch((error: unknown) => {
    // The reader went away (EPIPE) or the disk is full: stop packing at once.
    outputError ??= error
    pack.destroy(error as Error)
    throw error
  })
  done.catch(() => {})
  const root = {uid: 0, gid: 0, uname: 'root', gname: 'root'}
  try {
    for (const e of entries) {
      const header = {...root, name: e.name, mode: e.mode, mtime: e.mtime}
      if (e.type === 'directory') await entryDone(pack, {...header, type: 'directory'})
      else if (e.type === 'symlink') await entryDone(pack, {...header, type: 'symlink', linkname: e.linkname})
      else {
        await new Promise<void>((resolvePromise, reject) => {
          const sink = pack.entry({...header, type: 'file', size: e.size}, (err) => (err ? reject(err) : resolvePromise()))
          // Failures arrive through the callback above; without a listener they would be thrown.
          sink.on('error', () => {})
          const file = createReadStream(e.source!)
          file.on('error', (error) => {
            reject(fsError('EXPORT_UNREADABLE', 'Cannot read', e.source!, error))
            sink.destroy(error)
          })
          file.pipe(sink)
        })
      }
    }
    pack.finalize()
  } catch (error) {
    pack.destroy(error as Error)
    await done.catch(() => {})
    throw outputError ?? error
  }
  await done
  return bytes
}

function entryDone(pack: Pack, header: Partial<Header> & Pick<Header, 'name'>): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    pack.entry(header, (err) => (err ? reject(err) : resolvePromise())).on('error', () => {})
  })
}

export interface ExportOptions {
  format?: ExportFormat
  /** A file path, or '-' for `stdout`. Default: NAME.tar in the working directory. */
  output?: string
  paths?: Paths
  stdout?: Writable
}

/** Resolves NAME|PATH, plans the entries and writes the tarball (a file is written atomically). */
export async function exportExtension(arg: string, options: ExportOptions = {}): Promise<ExportResult> {
  const format = options.format ?? 'tar'
  if (format !== 'tar') throw usageError('USAGE', `Unknown export format '${format}'.`, 'Use --format tar.')
  const source = resolveExportSource(arg, options.paths)
  const entries = planExport(source.tree)
  if (!entries.some((e) => e.name === 'usr/' || e.name === 'opt/'))
    throw new HelperError('TREE_NOT_FOUND', `'${source.tree}' has neither usr/ nor opt/: it is not an extension tree.`, {file: source.tree})
  const output = options.output ?? `${source.name}.tar`
  if (output === '-') {
    let bytes: number
    try {
      bytes = await writeTar(entries, options.stdout ?? process.stdout)
    } catch (error) {
      if (error instanceof HelperError) throw error
      const broken = (error as NodeJS.ErrnoException).code === 'EPIPE'
      throw new HelperError('EXPORT_WRITE_FAILED', `Cannot write the tarball to stdout: ${broken ? 'the reader closed the pipe' : (error as Error).message}.`, {cause: error})
    }
    return {name: source.name, source, format, output: '-', entries: entries.length, bytes}
  }
  const target = resolve(output)
  const tmp = join(dirname(target), `.${basename(target)}.tmp-${process.pid}`)
  try {
    const bytes = await writeTar(entries, createWriteStream(tmp, {mode: 0o644}))
    renameSync(tmp, target)
    return {name: source.name, source, format, output: target, entries: entries.length, bytes}
  } catch (error) {
    rmSync(tmp, {force: true})
    if (error instanceof HelperError) throw error
    throw fsError('EXPORT_WRITE_FAILED', 'Cannot write', target, error)
  }
}
