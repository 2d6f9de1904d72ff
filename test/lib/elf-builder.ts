/**
 * Builds minimal, valid ELF objects so tests choose class, byte order,
 * machine, interpreter and dynamic entries exactly. Layout: ELF header,
 * program headers (PT_LOAD over the whole file, PT_INTERP, PT_DYNAMIC),
 * then the interpreter string, .dynstr and .dynamic.
 */
export const EM = {I386: 3, PPC64: 21, ARM: 40, X86_64: 62, AARCH64: 183, RISCV: 243} as const

export interface ElfSpec {
  bits?: 32 | 64
  byteOrder?: 'le' | 'be'
  machine?: number
  type?: 'exec' | 'dyn'
  interpreter?: string
  needed?: string[]
  soname?: string
  /** Emitted as DT_RUNPATH. */
  runpath?: string
  /** Emitted as DT_RPATH. */
  rpath?: string
  /** DT_VERNEED entries: versions needed per library (weak ones flagged VER_FLG_WEAK). */
  verneed?: Array<{file: string; versions: string[]; weak?: string[]}>
  /** DT_VERDEF: versions defined (a base entry named after the soname comes first). */
  verdef?: string[]
  /** Overrides DT_STRTAB, e.g. to point it outside every PT_LOAD segment. */
  strtabAddress?: number
}

/** Where the file is mapped; DT_STRTAB is this plus the offset of .dynstr. */
export const BASE_ADDRESS = 0x10000

export function buildElf(spec: ElfSpec = {}): Buffer {
  const is64 = (spec.bits ?? 64) === 64
  const le = (spec.byteOrder ?? 'le') === 'le'
  const ehsize = is64 ? 64 : 52
  const phentsize = is64 ? 56 : 32
  const dynEntry = is64 ? 16 : 8

  const strings: string[] = ['']
  const strOffset = (s: string): number => {
    const at = Buffer.byteLength(strings.join('\0'), 'latin1') + 1
    strings.push(s)
    return at
  }
  const dyn: [number, number][] = []
  for (const name of spec.needed ?? []) dyn.push([1, strOffset(name)])
  if (spec.soname !== undefined) dyn.push([14, strOffset(spec.soname)])
  if (spec.rpath !== undefined) dyn.push([15, strOffset(spec.rpath)])
  if (spec.runpath !== undefined) dyn.push([29, strOffset(spec.runpath)])
  // Version sections: laid out after .dynstr, their string offsets taken now.
  const verneed = (spec.verneed ?? []).map((v) => ({file: strOffset(v.file), aux: [...v.versions.map((n) => [strOffset(n), 0]), ...(v.weak ?? []).map((n) => [strOffset(n), 2])]}))
  const verdef = spec.verdef ? [strOffset(spec.soname ?? 'lib'), ...spec.verdef.map((n) => strOffset(n))] : []
  const hasDynamic = dyn.length > 0 || verneed.length > 0 || verdef.length > 0
  const dynstr = Buffer.from(`${strings.join('\0')}\0`, 'latin1')

  const phnum = 1 + (spec.interpreter !== undefined ? 1 : 0) + (hasDynamic ? 1 : 0)
  const interpAt = ehsize + phnum * phentsize
  const interp = Buffer.from(`${spec.interpreter ?? ''}\0`, 'latin1')
  const dynstrAt = interpAt + (spec.interpreter !== undefined ? interp.length : 0)
  const verneedAt = Math.ceil((dynstrAt + dynstr.length) / 8) * 8
  const verneedSize = verneed.reduce((n, v) => n + 16 + 16 * v.aux.length, 0)
  const verdefAt = verneedAt + verneedSize
  const verdefSize = verdef.length * 28
  const dynamicAt = Math.ceil((verdefAt + verdefSize) / 8) * 8
  if (verneed.length > 0) dyn.push([0x6ffffffe, BASE_ADDRESS + verneedAt], [0x6fffffff, verneed.length])
  if (verdef.length > 0) dyn.push([0x6ffffffc, BASE_ADDRESS + verdefAt], [0x6ffffffd, verdef.length])
  if (hasDynamic) {
    dyn.push([5, spec.strtabAddress ?? BASE_ADDRESS + dynstrAt], [10, dynstr.length], [0, 0])
  }
  const size = dynamicAt + (hasDynamic ? dyn.length * dynEntry : 0)
  const buf = Buffer.alloc(size)

  const u16 = (v: number, at: number): void => void (le ? buf.writeUInt16LE(v, at) : buf.writeUInt16BE(v, at))
  const u32 = (v: number, at: number): void => void (le ? buf.writeUInt32LE(v, at) : buf.writeUInt32BE(v, at))
  const u64 = (v: number, at: number): void => void (le ? buf.writeBigUInt64LE(BigInt(v), at) : buf.writeBigUInt64BE(BigInt(v), at))
  const word = (v: number, at: number): void => (is64 ? u64(v, at) : u32(v, at))

  buf.writeUInt32BE(0x7f454c46, 0)
  buf[4] = is64 ? 2 : 1
  buf[5] = le ? 1 : 2
  buf[6] = 1
  u16(spec.type === 'exec' ? 2 : 3, 16)
  u16(spec.machine ?? EM.X86_64, 18)
  u32(1, 20)
  word(ehsize, is64 ? 32 : 28) // e_phoff
  u16(ehsize, is64 ? 52 : 40)
  u16(phentsize, is64 ? 54 : 42)
  u16(phnum, is64 ? 56 : 44)

  let ph = ehsize
  const phdr = (type: number, offset: number, filesz: number): void => {
    u32(type, ph)
    if (is64) {
      u64(offset, ph + 8)
      u64(BASE_ADDRESS + offset, ph + 16)
      u64(BASE_ADDRESS + offset, ph + 24)
      u64(filesz, ph + 32)
      u64(filesz, ph + 40)
    } else {
      u32(offset, ph + 4)
      u32(BASE_ADDRESS + offset, ph + 8)
      u32(BASE_ADDRESS + offset, ph + 12)
      u32(filesz, ph + 16)
      u32(filesz, ph + 20)
    }
    ph += phentsize
  }
  phdr(1, 0, size)
  if (spec.interpreter !== undefined) {
    phdr(3, interpAt, interp.length)
    interp.copy(buf, interpAt)
  }
  let at = verneedAt
  verneed.forEach((v, i) => {
    u16(1, at)
    u16(v.aux.length, at + 2)
    u32(v.file, at + 4)
    u32(16, at + 8)
    u32(i === verneed.length - 1 ? 0 : 16 + 16 * v.aux.length, at + 12)
    v.aux.forEach(([name, flags], j) => {
      const a = at + 16 + 16 * j
      u16(flags, a + 4)
      u32(name, a + 8)
      u32(j === v.aux.length - 1 ? 0 : 16, a + 12)
    })
    at += 16 + 16 * v.aux.length
  })
  verdef.forEach((name, i) => {
    const d = verdefAt + 28 * i
    u16(1, d)
    u16(i === 0 ? 1 : 0, d + 2) // VER_FLG_BASE on the first
    u16(i + 1, d + 4)
    u16(1, d + 6)
    u32(20, d + 12)
    u32(i === verdef.length - 1 ? 0 : 28, d + 16)
    u32(name, d + 20)
  })
  if (hasDynamic) {
    phdr(2, dynamicAt, dyn.length * dynEntry)
    dynstr.copy(buf, dynstrAt)
    dyn.forEach(([tag, value], i) => {
      word(tag, dynamicAt + i * dynEntry)
      word(value, dynamicAt + i * dynEntry + dynEntry / 2)
    })
  }
  return buf
}
