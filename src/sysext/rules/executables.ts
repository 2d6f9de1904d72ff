/**
 * Can the extension's programs and libraries actually run on the host once
 * merged? A helper that cannot exec fails only when D-Bus activates it, so the
 * loader's work is redone here: the ELF interpreter, the DT_NEEDED closure
 * searched the way glibc's ld.so does, the architecture, and `#!` lines.
 *
 * A library found on the host counts as present whatever its class or machine,
 * and its own dependencies are not followed. Libraries in the extension are
 * checked fully. Symbol versions (VERNEED) every object needs from each library
 * are checked against what the library the loader would pick defines (VERDEF):
 * the host's libraries' ELF headers are read for that, once each (Host.elf).
 */
import {posix} from 'node:path'
import type {ElfInfo} from '../../formats/elf.js'
import {type Finding, error} from '../findings.js'
import {type Resolved, SYSTEMD_ARCHITECTURES, resolveMerged} from '../host.js'
import type {TreeEntry} from '../tree.js'
import type {RuleContext, RuleSet} from './context.js'

const RULES = {
  'exec-malformed': 'ELF executables and shared objects in the extension parse as valid ELF.',
  'exec-architecture-mismatch': 'ELF executables and shared objects are built for the host architecture.',
  'exec-interpreter-missing': 'The ELF interpreter (PT_INTERP) exists in the merged /usr or on the host.',
  'exec-library-missing': 'Every DT_NEEDED library, and those of libraries the extension ships, is found in the extension or on the host.',
  'exec-script-interpreter-missing': 'The #! interpreter of executable scripts exists and is executable once merged.',
  'exec-symbol-version-missing': 'Every symbol version an ELF object needs (VERNEED) is defined (VERDEF) by the library the loader resolves it to, on the host or in the tree.',
}

/** The newest of `defined` in the family of `wanted` (GLIBC_2.38 -> the highest GLIBC_x.y), when any. */
export function newestVersion(wanted: string, defined: readonly string[]): string | undefined {
  const family = /^(.*?)(\d+(?:\.\d+)*)$/.exec(wanted)?.[1]
  if (family === undefined) return undefined
  const numbers = (v: string): number[] => v.slice(family.length).split('.').map(Number)
  const compare = (a: string, b: string): number => {
    const x = numbers(a)
    const y = numbers(b)
    for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0)
    return 0
  }
  return defined.filter((d) => d.startsWith(family) && /^\d+(\.\d+)*$/.test(d.slice(family.length))).sort(compare).at(-1)
}

const GLIBC_LIBS = /^(libc|libm|libpthread|libdl|librt|libresolv|libutil|libanl|libmvec|libBrokenLocale|libnsl|ld-linux[^.]*|ld64|ld)\.so/

/** Architectures the host kernel also runs natively (systemd's ARCHITECTURE_SECONDARY). */
const SECONDARY: Record<string, string> = {'x86-64': 'x86', arm64: 'arm', ppc64: 'ppc', 'ppc64-le': 'ppc-le', s390x: 's390'}

/** AT_PLATFORM and the Debian multiarch tuple, for $PLATFORM and $LIB. */
const PLATFORMS: Record<string, {platform: string; tuple: string}> = {
  'x86-64': {platform: 'x86_64', tuple: 'x86_64-linux-gnu'},
  x86: {platform: 'i686', tuple: 'i386-linux-gnu'},
  arm64: {platform: 'aarch64', tuple: 'aarch64-linux-gnu'},
  arm: {platform: 'v7l', tuple: 'arm-linux-gnueabihf'},
  'ppc64-le': {platform: 'ppc64le', tuple: 'powerpc64le-linux-gnu'},
  s390x: {platform: 's390x', tuple: 's390x-linux-gnu'},
  riscv64: {platform: 'riscv64', tuple: 'riscv64-linux-gnu'},
  loongarch64: {platform: 'loongarch64', tuple: 'loongarch64-linux-gnu'},
}

/** Where `/usr/bin/env NAME` finds NAME on the host (systemd's default PATH for services). */
const ENV_PATH = ['/usr/bin', '/bin', '/usr/sbin', '/sbin']

/** Never loaded by ld.so: separate debug info, and firmware for other processors. */
const NOT_LOADED = ['usr/lib/debug/', 'usr/lib/firmware/']

const DST = /\$(?:\{(ORIGIN|LIB|PLATFORM)\}|(ORIGIN|LIB|PLATFORM)(?![A-Za-z0-9_]))/g

/** An object as ld.so would hold it while resolving a program's dependencies. */
interface Loaded {
  /** Tree path (relative), for messages. */
  file: string
  elf: ElfInfo
  /** $ORIGIN: the directory it was loaded from, as installed. */
  origin: string
  /** The object whose DT_NEEDED pulled this one in. */
  loader?: Loaded
  /** Whether some loader up the chain has DT_RPATH, which then applies to this object's search too. */
  inheritsRpath: boolean
}

interface Missing {
  name: string
  requester: Loaded
  searched: string[]
  /** Candidates ld.so would skip, with why. */
  rejected: string[]
}

function describeArch(elf: ElfInfo): string {
  return elf.architecture ?? `machine ${elf.machine}`
}

/** Same ABI as far as ld.so's checks go: class, byte order, machine. */
function sameAbi(a: ElfInfo, b: ElfInfo): boolean {
  return a.bits === b.bits && a.byteOrder === b.byteOrder && a.machine === b.machine
}

function isMerged(path: string): boolean {
  return path.startsWith('usr/') || path.startsWith('opt/')
}

function executable(mode: number): boolean {
  return (mode & 0o111) !== 0
}

export const executablesRules: RuleSet = {
  rules: RULES,
  check(ctx: RuleContext): Finding[] {
    const {tree, host} = ctx
    const findings: Finding[] = []

    const resolveCache = new Map<string, Resolved | undefined>()
    const resolve = (path: string): Resolved | undefined => {
      if (!resolveCache.has(path)) resolveCache.set(path, resolveMerged(tree, host, path))
      return resolveCache.get(path)
    }

    /** $ORIGIN, $LIB and $PLATFORM expanded; an element may expand to several directories or none. */
    const expand = (element: string, obj: Loaded): string[] => {
      // An empty element means the working directory; activated services start in '/'.
      if (element === '') return ['/']
      const platform = PLATFORMS[obj.elf.architecture ?? '']
      // $LIB depends on how the host's glibc was built (lib64, lib/<tuple>, lib): try each.
      const libs = [...(obj.elf.bits === 64 ? ['lib64'] : []), ...(platform ? [`lib/${platform.tuple}`] : []), 'lib']
      let out = [element]
      for (const match of element.matchAll(DST)) {
        const name = match[1] ?? match[2]
        const values = name === 'ORIGIN' ? [obj.origin] : name === 'LIB' ? libs : platform ? [platform.platform] : []
        out = out.flatMap((path) => values.map((value) => path.replace(match[0], () => value)))
      }
      return out.map((path) => posix.resolve('/', path))
    }

    /** ld.so's search order: DT_RPATH of the object and its loaders (unless it has DT_RUNPATH), DT_RUNPATH, then the host's directories. */
    const computeSearchDirs = (obj: Loaded): string[] => {
      const dirs: string[] = []
      if (obj.elf.runpathTag !== 'DT_RUNPATH')
        for (let l: Loaded | undefined = obj; l; l = l.loader)
          if (l.elf.runpathTag === 'DT_RPATH') for (const element of l.elf.runpath) dirs.push(...expand(element, l))
      if (obj.elf.runpathTag === 'DT_RUNPATH') for (const element of obj.elf.runpath) dirs.push(...expand(element, obj))
      dirs.push(...host.libraryDirs)
      return [...new Set(dirs)]
    }

    /** The tree entry of a candidate, its ELF info when it can be used, or why the loader would skip it. */
    const candidate = (path: string, wanted: ElfInfo): {ok: true; entry?: TreeEntry; path?: string} | {ok: false; why: string} | undefined => {
      const found = resolve(path)
      if (!found || found.type !== 'file') return undefined
      if (found.source === 'host') return {ok: true, path: found.path}
      const entry = tree.entries.get(found.path.slice(1)) as TreeEntry
      // Unreadable here (files rules report it): give it the benefit of the doubt.
      if (entry.readError) return {ok: true}
      if (!entry.elf) {
        // scanTree parses files that are executable or named *.so*; others were not looked at.
        const inspected = executable(entry.mode) || /\.so(\.|$)/.test(entry.path)
        return inspected ? {ok: false, why: `${entry.path} is not an ELF object`} : {ok: true}
      }
      if (entry.elf.malformed) return {ok: false, why: `${entry.path} is malformed (${entry.elf.malformed})`}
      if (!sameAbi(entry.elf, wanted))
        return {ok: false, why: `${entry.path} is ${entry.elf.bits}-bit ${describeArch(entry.elf)}, not ${wanted.bits}-bit ${describeArch(wanted)}`}
      return {ok: true, entry}
    }

    interface Found {
      hit?: {dir: string; entry?: TreeEntry; path?: string}
      /** Candidates ld.so would skip, with why. */
      rejected: string[]
      searched: string[]
    }
    /** An object's search directories and what was found there, by DT_NEEDED name. */
    interface Search {
      dirs: string[]
      found: Map<string, Found>
    }

    // A library is reached again from every program that loads it; caching its search per
    // (object, $ORIGIN) makes that a Map lookup. Loaders' DT_RPATH makes the search depend on
    // the whole chain; that is rare, so such searches are not cached.
    const searchCache = new WeakMap<ElfInfo, Map<string, Search>>()
    const searchOf = (obj: Loaded): Search => {
      if (obj.inheritsRpath) return {dirs: computeSearchDirs(obj), found: new Map()}
      let byOrigin = searchCache.get(obj.elf)
      if (!byOrigin) searchCache.set(obj.elf, (byOrigin = new Map()))
      let search = byOrigin.get(obj.origin)
      if (!search) byOrigin.set(obj.origin, (search = {dirs: computeSearchDirs(obj), found: new Map()}))
      return search
    }

    /** Where ld.so finds `name` for `obj`. */
    const find = (name: string, obj: Loaded, search: Search): Found => {
      const cached = search.found.get(name)
      if (cached) return cached
      // A name with a slash is a path (DSTs expanded), not searched for.
      const paths = name.includes('/') ? expand(name, obj) : search.dirs.map((dir) => posix.join(dir, name))
      const found: Found = {rejected: [], searched: name.includes('/') ? paths : search.dirs}
      for (const path of paths) {
        const result = candidate(path, obj.elf)
        if (!result) continue
        if (!result.ok) found.rejected.push(result.why)
        else {
          found.hit = {dir: posix.dirname(path), entry: result.entry, path: result.path}
          break
        }
      }
      search.found.set(name, found)
      return found
    }

    /** (object, library) pairs whose symbol versions were checked: each is reported once, on the object. */
    const versionsChecked = new Set<string>()
    const checkVersions = (obj: Loaded, name: string, hit: NonNullable<Found['hit']>): void => {
      const needs = obj.elf.verneed?.find((v) => v.file === name)?.versions
      if (!needs || needs.length === 0) return
      const key = `${obj.file}\0${name}\0${hit.entry?.path ?? hit.path}`
      if (versionsChecked.has(key)) return
      versionsChecked.add(key)
      const provider = hit.entry ? hit.entry.elf : hit.path ? host.elf(hit.path) : undefined
      // Unreadable, malformed or unversioned providers: ld.so only warns about the last ("no version information available").
      if (!provider || provider.malformed || !provider.verdef || provider.verdef.length === 0) return
      const defined = new Set(provider.verdef)
      const missing = needs.filter((v) => !defined.has(v))
      if (missing.length === 0) return
      const newest = newestVersion(missing[0], provider.verdef)
      const where = hit.entry ? `the extension's ${hit.entry.path}` : GLIBC_LIBS.test(name) ? `this host's glibc (${hit.path})` : `this host's ${hit.path}`
      const has = newest ? `provides up to ${newest}` : `defines none of the ${missing.length === 1 ? 'version' : 'versions'} (it has ${provider.verdef.slice(0, 3).join(', ')}${provider.verdef.length > 3 ? ', …' : ''})`
      const file = obj.file
      const consequence = executable(tree.entries.get(file)?.mode ?? 0) ? 'activation will fail with' : 'loading it will fail with'
      findings.push(error('exec-symbol-version-missing', file,
        `${file} needs ${missing.join(', ')} from ${name}; ${where} ${has}; ${consequence} "version \`${missing[0]}' not found".`,
        GLIBC_LIBS.test(name)
          ? `Build against an older glibc (${newest ?? 'the host\'s'} or earlier), link statically, or target the matching release with ID= and VERSION_ID= in the extension-release file.`
          : `Ship a ${name} that defines ${missing.join(', ')} under usr/lib/<app>/ with RUNPATH, build against the host's ${name}, or target the matching release with ID= and VERSION_ID=.`))
    }

    /** Tree libraries some program's closure loaded: their dependencies were judged in that context. */
    const reached = new Set<string>()

    /** The DT_NEEDED closure of `root`; returns what could not be found, once per name. */
    const missingLibraries = (root: Loaded): Missing[] => {
      const missing = new Map<string, Missing>()
      // Names already loaded, with what satisfied them (the root's own soname: nothing to check against).
      const satisfied = new Map<string, Found['hit']>(root.elf.soname ? [[root.elf.soname, undefined]] : [])
      const visited = new Set<string>([root.file])
      const queue: Loaded[] = [root]
      for (let i = 0; i < queue.length; i++) {
        const obj = queue[i]
        const search = searchOf(obj)
        for (const name of obj.elf.needed) {
          if (missing.has(name)) continue
          if (satisfied.has(name)) {
            const loaded = satisfied.get(name)
            if (loaded) checkVersions(obj, name, loaded)
            continue
          }
          const {hit, rejected, searched} = find(name, obj, search)
          if (!hit) {
            missing.set(name, {name, requester: obj, searched, rejected})
            continue
          }
          satisfied.set(name, hit)
          checkVersions(obj, name, hit)
          const lib = hit.entry
          if (lib?.elf && !visited.has(lib.path)) {
            visited.add(lib.path)
            reached.add(lib.path)
            if (lib.elf.soname && !satisfied.has(lib.elf.soname)) satisfied.set(lib.elf.soname, hit)
            const inheritsRpath = obj.inheritsRpath || obj.elf.runpathTag === 'DT_RPATH'
            queue.push({file: lib.path, elf: lib.elf, origin: hit.dir, loader: obj, inheritsRpath})
          }
        }
      }
      return [...missing.values()]
    }

    const hostArchKnown = SYSTEMD_ARCHITECTURES.includes(host.architecture)
    const runsOnHost = (elf: ElfInfo): boolean =>
      elf.architecture === undefined
        ? !hostArchKnown
        : elf.architecture === host.architecture || elf.architecture === SECONDARY[host.architecture]

    const failure = (entry: TreeEntry): string => (executable(entry.mode) ? 'activation will fail with' : 'loading it will fail with')

    /** Checks that need only the file itself; returns whether its libraries are worth resolving. */
    const checkElf = (entry: TreeEntry, elf: ElfInfo): boolean => {
      const file = entry.path
      if (elf.malformed) {
        findings.push(error('exec-malformed', file,
          `${file} starts like an ELF file but is malformed: ${elf.malformed}; the kernel and ld.so will refuse it.`,
          'Rebuild it, and check that packaging did not truncate or rewrite it.'))
        return false
      }
      if (elf.type !== 'exec' && elf.type !== 'dyn') return false
      if (!runsOnHost(elf)) {
        const consequence = executable(entry.mode) ? 'activation will fail with "Exec format error"' : 'ld.so will not load it'
        findings.push(error('exec-architecture-mismatch', file,
          `${file} is built for ${describeArch(elf)}, but the host is ${host.architecture}; ${consequence}.`,
          `Build the extension for ${host.architecture}, or ship one extension per architecture with ARCHITECTURE= set in its extension-release file.`))
        return false
      }
      if (elf.interpreter !== undefined) {
        const interp = resolve(posix.resolve('/', elf.interpreter))
        if (!interp || interp.type !== 'file')
          findings.push(error('exec-interpreter-missing', file,
            `${file} requests the ELF interpreter ${elf.interpreter}, which is neither in the extension nor on the host; ${failure(entry)} "No such file or directory".`,
            'Build against the host\'s C library, or link the program statically.'))
      }
      return true
    }

    const checkLibraries = (entry: TreeEntry, elf: ElfInfo): void => {
      const file = entry.path
      const root: Loaded = {file, elf, origin: posix.dirname(`/${file}`), inheritsRpath: false}
      for (const m of missingLibraries(root)) {
        const via = m.requester === root ? `${file} needs ${m.name}` : `${file} loads ${m.requester.file}, which needs ${m.name}`
        const skipped = m.rejected.length > 0 ? ` (skipped: ${m.rejected.join('; ')})` : ''
        const appDir = posix.relative(posix.dirname(`/${m.requester.file}`), '/usr/lib/<app>')
        findings.push(error('exec-library-missing', file,
          `${via}, which is neither in the extension nor on the host (searched ${m.searched.join(', ')})${skipped}; ${failure(entry)} "error while loading shared libraries".`,
          `Ship ${m.name} under usr/lib/<app>/ and link ${m.requester.file} with RUNPATH $ORIGIN/${appDir}, link it statically, or build against the host's runtime.`))
      }
    }

    const checkScript = (entry: TreeEntry, shebang: string): void => {
      const file = entry.path
      const missing = (message: string, hint: string): void => {
        findings.push(error('exec-script-interpreter-missing', file, message, hint))
      }
      const usable = (path: string): boolean => {
        const found = resolve(posix.resolve('/', path))
        return found !== undefined && found.type === 'file' && executable(found.mode)
      }
      // The kernel splits the #! line once: the interpreter, then everything else as one argument.
      const [interp] = shebang.split(/[ \t]/, 1)
      const arg = shebang.slice(interp.length).trim()
      if (interp === '') {
        missing(`${file} has an empty #! line; activation will fail with "Exec format error".`, 'Name an interpreter the host has, e.g. #!/bin/sh.')
        return
      }
      const target = resolve(posix.resolve('/', interp))
      if (!target || target.type !== 'file') {
        missing(`${file} starts with #!${interp}, which is neither in the extension nor on the host; activation will fail with "No such file or directory".`,
          'Use an interpreter the host has, or ship it in the extension.')
        return
      }
      if (!executable(target.mode)) {
        missing(`${file} starts with #!${interp}, which is not executable (mode ${(target.mode & 0o7777).toString(8)}); activation will fail with "Permission denied".`,
          `Use an interpreter the host has, or ship ${interp} in the extension with mode 0755.`)
        return
      }
      if (posix.basename(interp) !== 'env' || arg === '') return
      let name: string
      if (/^(-S|--split-string)/.test(arg)) {
        // env -S splits the argument itself: skip its options and VAR=value assignments.
        const words = arg.replace(/^(-S|--split-string=?)/, '').trim().split(/\s+/)
        const program = words.find((w) => w !== '' && !w.startsWith('-') && !w.includes('='))
        if (program === undefined) return
        name = program
      } else if (arg.startsWith('-')) {
        return
      } else {
        name = arg
      }
      if (name.includes('/') ? usable(name) : ENV_PATH.some((dir) => usable(posix.join(dir, name)))) return
      const split = /\s/.test(name) ? ` (the kernel passes "${name}" to env as one word)` : ''
      missing(`${file} runs "${name}" through ${interp}, but no executable ${name} is in ${ENV_PATH.join(', ')} of the extension or the host${split}; activation will fail with "No such file or directory".`,
        split ? `Use "#!${interp} -S ${name}", or name the interpreter's absolute path.` : `Use an interpreter the host has, or ship ${name} in the extension.`)
    }

    const programs: [TreeEntry, ElfInfo][] = []
    const libraries: [TreeEntry, ElfInfo][] = []
    for (const entry of tree.entries.values()) {
      if (entry.type !== 'file' || !isMerged(entry.path)) continue
      if (entry.elf && !NOT_LOADED.some((prefix) => entry.path.startsWith(prefix))) {
        if (!checkElf(entry, entry.elf)) continue
        if (executable(entry.mode) && (entry.elf.type === 'exec' || entry.elf.interpreter !== undefined)) programs.push([entry, entry.elf])
        else libraries.push([entry, entry.elf])
      } else if (entry.shebang !== undefined) {
        checkScript(entry, entry.shebang)
      }
    }
    // Programs first: a library they load is judged with their DT_RPATH in effect, and
    // its missing dependencies are reported on each program that breaks. Libraries no
    // program loads (plugins, dlopen()ed helpers) are judged on their own.
    for (const [entry, elf] of programs) checkLibraries(entry, elf)
    for (const [entry, elf] of libraries) if (!reached.has(entry.path)) checkLibraries(entry, elf)
    return findings
  },
}
