/** ELF header parsing (placeholder signature; implemented in the executables work). */
export interface ElfInfo {
  bits: 32 | 64
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
  soname?: string
  /** Set when the file is not a well-formed ELF object. */
  malformed?: string
}

export function parseElf(_read: (offset: number, length: number) => Buffer): ElfInfo {
  return {bits: 64, machine: 0, type: 'other', needed: [], runpath: []}
}
