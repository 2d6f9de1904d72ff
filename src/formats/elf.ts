import {closeSync, openSync, readSync} from 'node:fs'
/**
 * ELF parsing: just enough of the file and program headers and the dynamic
 * section to tell whether an object can be loaded on a host. Input comes from
 * extension trees, i.e. from anyone, so every offset and count is checked and
 * capped; problems end in `malformed`, never in an exception.
 */
export interface ElfInfo {
  bits: 32 | 64
  /** EI_DATA: the loader rejects objects whose byte order differs from the program's. */
  byteOrder: 'le' | 'be'
  /** e_machine. */
  machine: number
  /** systemd's name for the machine (x86-64, arm64, ...), when known. */
  architecture?: string
  type: 'exec' | 'dyn' | 'rel' | 'core' | 'other'
  /** PT_INTERP, e.g. /lib64/ld-linux-x86-64.so.2. */
  interpreter?: string
  /** DT_NEEDED entries, in order. */
  needed: string[]
  /** DT_RUNPATH, else DT_RPATH, split on ':' ($ORIGIN not expanded). */
  runpath: string[]
  /** Which tag `runpath` came from: ld.so applies DT_RPATH to the dependencies of dependencies too, DT_RUNPATH only to the object's own. */
  runpathTag?: 'DT_RUNPATH' | 'DT_RPATH'
  soname?: string
  /**
   * Symbol versions the object needs (DT_VERNEED, `.gnu.version_r`), per DT_NEEDED
   * library name; weak references (VER_FLG_WEAK) are left out, ld.so does not
   * refuse to load when they are missing.
   */
  verneed?: Array<{file: string; versions: string[]}>
  /** Symbol versions the object defines (DT_VERDEF, `.gnu.version_d`), without the base (soname) entry. */
  verdef?: string[]
  /** Set when the file is not a well-formed ELF object. */
  malformed?: string
}

/** Reads up to `length` bytes at `offset`; a short buffer means end of file. */
export type ElfReader = (offset: number, length: number) => Buffer

/** A positioned reader over an open file descriptor (short at end of file). */
export function fdReader(fd: number): ElfReader {
  return (offset, length) => {
    const buf = Buffer.alloc(length)
    return buf.subarray(0, readSync(fd, buf, 0, length, offset))
  }
}

/** Parses the ELF file at `path`; throws only when it cannot be opened. */
export function parseElfFile(path: string): ElfInfo {
  const fd = openSync(path, 'r')
  try {
    return parseElf(fdReader(fd))
  } finally {
    closeSync(fd)
  }
}

const MAX_PHNUM = 512
const MAX_DYNAMIC = 64 * 1024
const MAX_NEEDED = 1024
const MAX_STRING = 4096

const PT_LOAD = 1
const PT_DYNAMIC = 2
const PT_INTERP = 3

const DT_NULL = 0
const DT_NEEDED = 1
const DT_STRTAB = 5
const DT_STRSZ = 10
const DT_SONAME = 14
const DT_RPATH = 15
const DT_RUNPATH = 29
const DT_VERDEF = 0x6ffffffc
const DT_VERDEFNUM = 0x6ffffffd
const DT_VERNEED = 0x6ffffffe
const DT_VERNEEDNUM = 0x6fffffff
const VER_FLG_BASE = 0x1
const VER_FLG_WEAK = 0x2
const MAX_VERSIONS = 4096

const TYPES: Record<number, ElfInfo['type']> = {1: 'rel', 2: 'exec', 3: 'dyn', 4: 'core'}

/** e_machine -> systemd's architecture name (src/basic/architecture.c), by class and byte order. */
export function architectureOf(machine: number, bits: 32 | 64, byteOrder: 'le' | 'be'): string | undefined {
  const le = byteOrder === 'le'
  switch (machine) {
    case 2: case 18: return 'sparc'
    case 3: return 'x86'
    case 4: return 'm68k'
    case 8: return (bits === 64 ? 'mips64' : 'mips') + (le ? '-le' : '')
    case 15: return bits === 64 ? 'parisc64' : 'parisc'
    case 20: return le ? 'ppc-le' : 'ppc'
    case 21: return le ? 'ppc64-le' : 'ppc64'
    case 22: return bits === 64 ? 's390x' : 's390'
    case 40: return le ? 'arm' : 'arm-be'
    case 42: return bits === 64 ? 'sh64' : 'sh'
    case 43: return 'sparc64'
    case 50: return 'ia64'
    // x32 objects are EM_X86_64 in ELFCLASS32; they run on x86-64 kernels.
    case 62: return 'x86-64'
    case 76: return 'cris'
    case 93: case 195: return le ? 'arc' : 'arc-be'
    case 113: return 'nios2'
    case 183: return le ? 'arm64' : 'arm64-be'
    case 191: return 'tilegx'
    case 243: return bits === 64 ? 'riscv64' : 'riscv32'
    case 258: return bits === 64 ? 'loongarch64' : undefined
    case 0x9026: return 'alpha'
    default: return undefined
  }
}

interface Segment {
  vaddr: number
  offset: number
  filesz: number
}

class Malformed extends Error {}

const PAGE = 4096
const MAX_PAGES = 64

/** Serves small reads from 4 KiB pages: headers, strings and version entries sit close together. */
function paged(read: ElfReader): ElfReader {
  const pages = new Map<number, Buffer>()
  const page = (n: number): Buffer => {
    let buf = pages.get(n)
    if (!buf) {
      buf = read(n * PAGE, PAGE)
      if (pages.size < MAX_PAGES) pages.set(n, buf)
    }
    return buf
  }
  return (offset, length) => {
    if (!Number.isSafeInteger(offset) || offset < 0 || length > PAGE) return read(offset, length)
    const first = Math.floor(offset / PAGE)
    const last = Math.floor((offset + length - 1) / PAGE)
    if (length === 0) return Buffer.alloc(0)
    if (first === last) {
      const buf = page(first)
      return buf.subarray(offset - first * PAGE, Math.min(buf.length, offset - first * PAGE + length))
    }
    const a = page(first)
    const b = a.length < PAGE ? Buffer.alloc(0) : page(last)
    return Buffer.concat([a, b]).subarray(offset - first * PAGE, offset - first * PAGE + length)
  }
}

export function parseElf(read: ElfReader): ElfInfo {
  const info: ElfInfo = {bits: 64, byteOrder: 'le', machine: 0, type: 'other', needed: [], runpath: []}
  try {
    parseInto(paged(read), info)
  } catch (error) {
    info.malformed = error instanceof Malformed ? error.message : `cannot be read: ${(error as Error).message ?? String(error)}`
  }
  return info
}

function parseInto(read: ElfReader, info: ElfInfo): void {
  /** Exactly `length` bytes at `offset`, or Malformed naming `what`. */
  const readExact = (offset: number, length: number, what: string): Buffer => {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new Malformed(`${what} has an invalid file offset`)
    const buf = read(offset, length)
    if (buf.length < length) throw new Malformed(`${what} extends past the end of the file`)
    return buf
  }

  const ident = readExact(0, 16, 'ELF identification')
  if (ident.readUInt32BE(0) !== 0x7f454c46) throw new Malformed('no ELF magic')
  if (ident[4] !== 1 && ident[4] !== 2) throw new Malformed(`unknown ELF class ${ident[4]}`)
  if (ident[5] !== 1 && ident[5] !== 2) throw new Malformed(`unknown ELF byte order ${ident[5]}`)
  if (ident[6] !== 1) throw new Malformed(`unknown ELF version ${ident[6]}`)
  const is64 = ident[4] === 2
  const le = ident[5] === 1
  info.bits = is64 ? 64 : 32
  info.byteOrder = le ? 'le' : 'be'

  const u16 = (b: Buffer, at: number): number => (le ? b.readUInt16LE(at) : b.readUInt16BE(at))
  const u32 = (b: Buffer, at: number): number => (le ? b.readUInt32LE(at) : b.readUInt32BE(at))
  // Values above 2^53 cannot be valid offsets here; Number() keeps them huge so range checks reject them.
  const u64 = (b: Buffer, at: number): number => Number(le ? b.readBigUInt64LE(at) : b.readBigUInt64BE(at))
  const word = (b: Buffer, at: number): number => (is64 ? u64(b, at) : u32(b, at))

  const header = readExact(0, is64 ? 64 : 52, 'ELF header')
  info.type = TYPES[u16(header, 16)] ?? 'other'
  info.machine = u16(header, 18)
  info.architecture = architectureOf(info.machine, info.bits, info.byteOrder)

  const phoff = word(header, is64 ? 32 : 28)
  const phentsize = u16(header, is64 ? 54 : 42)
  const phnum = u16(header, is64 ? 56 : 44)
  if (phnum === 0) return
  if (phnum > MAX_PHNUM) throw new Malformed(`${phnum} program headers (more than ${MAX_PHNUM})`)
  // ld.so rejects any other entry size too.
  if (phentsize !== (is64 ? 56 : 32)) throw new Malformed(`program header size is ${phentsize}, not ${is64 ? 56 : 32}`)
  const table = readExact(phoff, phentsize * phnum, 'program header table')

  const loads: Segment[] = []
  let interp: Segment | undefined
  let dynamic: Segment | undefined
  for (let i = 0; i < phnum; i++) {
    const at = i * phentsize
    const segment: Segment = is64
      ? {offset: u64(table, at + 8), vaddr: u64(table, at + 16), filesz: u64(table, at + 32)}
      : {offset: u32(table, at + 4), vaddr: u32(table, at + 8), filesz: u32(table, at + 16)}
    const type = u32(table, at)
    if (type === PT_LOAD) loads.push(segment)
    else if (type === PT_INTERP) interp ??= segment
    else if (type === PT_DYNAMIC) dynamic ??= segment
  }

  if (interp) {
    if (interp.filesz > MAX_STRING) throw new Malformed(`PT_INTERP is ${interp.filesz} bytes long`)
    const raw = readExact(interp.offset, interp.filesz, 'PT_INTERP')
    const nul = raw.indexOf(0)
    info.interpreter = raw.subarray(0, nul === -1 ? raw.length : nul).toString('latin1')
  }

  if (!dynamic) return
  const entrySize = is64 ? 16 : 8
  const count = Math.min(Math.floor(dynamic.filesz / entrySize), MAX_DYNAMIC / entrySize)
  const dyn = readExact(dynamic.offset, count * entrySize, 'PT_DYNAMIC')
  let strtab: number | undefined
  let strsz: number | undefined
  const neededAt: number[] = []
  let sonameAt: number | undefined
  let rpathAt: number | undefined
  let runpathAt: number | undefined
  let verneedAt: number | undefined
  let verneedNum = 0
  let verdefAt: number | undefined
  let verdefNum = 0
  for (let i = 0; i < count; i++) {
    const at = i * entrySize
    // d_tag is signed, but every tag read here is small and positive.
    const tag = is64 ? u64(dyn, at) : u32(dyn, at)
    const value = word(dyn, at + entrySize / 2)
    if (tag === DT_NULL) break
    if (tag === DT_NEEDED) {
      if (neededAt.length >= MAX_NEEDED) throw new Malformed(`more than ${MAX_NEEDED} DT_NEEDED entries`)
      neededAt.push(value)
    } else if (tag === DT_STRTAB) strtab = value
    else if (tag === DT_STRSZ) strsz = value
    else if (tag === DT_SONAME) sonameAt = value
    else if (tag === DT_RPATH) rpathAt = value
    else if (tag === DT_RUNPATH) runpathAt = value
    else if (tag === DT_VERNEED) verneedAt = value
    else if (tag === DT_VERNEEDNUM) verneedNum = value
    else if (tag === DT_VERDEF) verdefAt = value
    else if (tag === DT_VERDEFNUM) verdefNum = value
  }
  if (neededAt.length === 0 && sonameAt === undefined && rpathAt === undefined && runpathAt === undefined && verneedAt === undefined && verdefAt === undefined) return
  if (strtab === undefined) throw new Malformed('PT_DYNAMIC has strings but no DT_STRTAB')

  // DT_STRTAB is an address in memory; the PT_LOAD segment holding it says where that is in the file.
  const address = strtab
  const load = loads.find((s) => address >= s.vaddr && address < s.vaddr + s.filesz)
  if (!load) throw new Malformed(`DT_STRTAB 0x${address.toString(16)} is not inside any PT_LOAD segment`)
  const tableOffset = load.offset + (address - load.vaddr)
  const tableEnd = load.offset + load.filesz

  const string = (index: number, what: string): string => {
    if (strsz !== undefined && index >= strsz) throw new Malformed(`${what} string offset ${index} is past DT_STRSZ ${strsz}`)
    const start = tableOffset + index
    if (!Number.isSafeInteger(start) || start >= tableEnd) throw new Malformed(`${what} string is outside its segment`)
    const limit = Math.min(MAX_STRING, tableEnd - start)
    const bytes = read(start, Math.min(256, limit))
    let nul = bytes.indexOf(0)
    let buf = bytes
    if (nul === -1 && bytes.length === 256 && limit > 256) {
      buf = read(start, limit)
      nul = buf.indexOf(0)
    }
    if (nul === -1) throw new Malformed(`${what} string is not terminated`)
    return buf.subarray(0, nul).toString('latin1')
  }

  info.needed = neededAt.map((at) => string(at, 'DT_NEEDED'))
  if (sonameAt !== undefined) info.soname = string(sonameAt, 'DT_SONAME')
  /** File offset of a virtual address, through the PT_LOAD segment holding it. */
  const fileOffset = (addr: number, what: string): number => {
    const seg = loads.find((l) => addr >= l.vaddr && addr < l.vaddr + l.filesz)
    if (!seg) throw new Malformed(`${what} 0x${addr.toString(16)} is not inside any PT_LOAD segment`)
    return seg.offset + (addr - seg.vaddr)
  }
  if (verneedAt !== undefined && verneedNum > 0) {
    const verneed: Array<{file: string; versions: string[]}> = []
    let at = fileOffset(verneedAt, 'DT_VERNEED')
    let total = 0
    for (let i = 0; i < Math.min(verneedNum, MAX_NEEDED); i++) {
      const vn = readExact(at, 16, 'DT_VERNEED entry')
      const cnt = u16(vn, 2)
      const file = string(u32(vn, 4), 'DT_VERNEED file')
      const versions: string[] = []
      let aux = at + u32(vn, 8)
      for (let j = 0; j < cnt; j++) {
        if (++total > MAX_VERSIONS) throw new Malformed(`more than ${MAX_VERSIONS} version references`)
        const vna = readExact(aux, 16, 'DT_VERNEED auxiliary entry')
        if ((u16(vna, 4) & VER_FLG_WEAK) === 0) versions.push(string(u32(vna, 8), 'DT_VERNEED version'))
        const next = u32(vna, 12)
        if (next === 0) break
        aux += next
      }
      verneed.push({file, versions})
      const next = u32(vn, 12)
      if (next === 0) break
      at += next
    }
    info.verneed = verneed
  }
  if (verdefAt !== undefined && verdefNum > 0) {
    const verdef: string[] = []
    let at = fileOffset(verdefAt, 'DT_VERDEF')
    for (let i = 0; i < Math.min(verdefNum, MAX_VERSIONS); i++) {
      const vd = readExact(at, 20, 'DT_VERDEF entry')
      if ((u16(vd, 2) & VER_FLG_BASE) === 0 && u16(vd, 6) > 0) {
        const vda = readExact(at + u32(vd, 12), 8, 'DT_VERDEF auxiliary entry')
        verdef.push(string(u32(vda, 0), 'DT_VERDEF version'))
      }
      const next = u32(vd, 16)
      if (next === 0) break
      at += next
    }
    info.verdef = verdef
  }
  // glibc ignores DT_RPATH when DT_RUNPATH is present.
  if (runpathAt !== undefined) {
    info.runpath = string(runpathAt, 'DT_RUNPATH').split(':')
    info.runpathTag = 'DT_RUNPATH'
  } else if (rpathAt !== undefined) {
    info.runpath = string(rpathAt, 'DT_RPATH').split(':')
    info.runpathTag = 'DT_RPATH'
  }
}
