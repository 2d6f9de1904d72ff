/**
 * Marshals arbitrary D-Bus messages, valid or not, for fuzzing a service:
 * any header fields, any declared signature and UNIX_FDS count, any body
 * bytes. Values are written for a signature with the usual alignment rules.
 */

import {Writer} from '../../src/capture/wire.js'

export type RawValue = number | bigint | boolean | string | Buffer | RawValue[] | {variant: string; value: RawValue} | Array<[RawValue, RawValue]>

/** Splits a signature into complete types. */
export function splitSignature(sig: string): string[] {
  const out: string[] = []
  let i = 0
  const one = (): string => {
    const start = i
    const c = sig[i++]
    if (c === 'a') one()
    else if (c === '(' || c === '{') {
      const close = c === '(' ? ')' : '}'
      while (i < sig.length && sig[i] !== close) one()
      i++
    }
    return sig.slice(start, i)
  }
  while (i < sig.length) out.push(one())
  return out
}

const ALIGN: Record<string, number> = {y: 1, b: 4, n: 2, q: 2, i: 4, u: 4, h: 4, x: 8, t: 8, d: 8, s: 4, o: 4, g: 1, a: 4, '(': 8, '{': 8, v: 1}

function write(w: Writer, type: string, v: RawValue): void {
  const c = type[0]
  w.align(ALIGN[c] ?? 1)
  switch (c) {
    case 'y': return w.u8(Number(v))
    case 'b': case 'i': case 'u': case 'h': return w.u32(Number(v === true ? 1 : v === false ? 0 : v))
    case 'x': case 't': case 'd': return w.u64(BigInt(v as number | bigint))
    case 's': case 'o': return w.string(String(v))
    case 'g': return w.signature(String(v))
    case 'v': {
      const {variant, value} = v as {variant: string; value: RawValue}
      w.signature(variant)
      return write(w, variant, value)
    }
    case 'a': {
      const elem = type.slice(1)
      w.u32(0)
      const at = w.length - 4
      w.align(ALIGN[elem[0]] ?? 1)
      const start = w.length
      if (elem === 'y' && Buffer.isBuffer(v)) w.raw(v)
      else if (elem[0] === '{') {
        const [k, val] = splitSignature(elem.slice(1, -1))
        for (const [ek, ev] of v as Array<[RawValue, RawValue]>) {
          w.align(8)
          write(w, k, ek)
          write(w, val, ev)
        }
      } else for (const e of v as RawValue[]) write(w, elem, e)
      w.patchU32(at, w.length - start)
      return
    }
    case '(': {
      const parts = splitSignature(type.slice(1, -1))
      parts.forEach((p, i) => write(w, p, (v as RawValue[])[i]))
      return
    }
    default: throw new Error(`cannot write type ${type}`)
  }
}

/** Marshals a body for `signature` (offsets as from the start of the body, which is 8-aligned). */
export function body(signature: string, values: RawValue[]): Buffer {
  const w = new Writer()
  splitSignature(signature).forEach((t, i) => write(w, t, values[i]))
  return w.result()
}

export interface RawMessageSpec {
  type?: number // 1 call, 2 return, 3 error, 4 signal
  flags?: number
  serial: number
  path?: string
  interface?: string
  member?: string
  errorName?: string
  replySerial?: number
  destination?: string
  /** Declared signature; the body is not checked against it. */
  signature?: string
  /** Declared UNIX_FDS (independent of how many fds are sent). */
  unixFds?: number
  body?: Buffer
}

export function rawMessage(m: RawMessageSpec): Buffer {
  const w = new Writer()
  const bodyBuf = m.body ?? Buffer.alloc(0)
  w.u8(0x6c)
  w.u8(m.type ?? 1)
  w.u8(m.flags ?? 0)
  w.u8(1)
  w.u32(bodyBuf.length)
  w.u32(m.serial)
  w.u32(0)
  const fieldsAt = w.length - 4
  const start = w.length
  const field = (code: number, sig: string, value: RawValue): void => {
    w.align(8)
    w.u8(code)
    w.signature(sig)
    write(w, sig, value)
  }
  if (m.path !== undefined) field(1, 'o', m.path)
  if (m.interface !== undefined) field(2, 's', m.interface)
  if (m.member !== undefined) field(3, 's', m.member)
  if (m.errorName !== undefined) field(4, 's', m.errorName)
  if (m.replySerial !== undefined) field(5, 'u', m.replySerial)
  if (m.destination !== undefined) field(6, 's', m.destination)
  if (m.signature !== undefined && m.signature !== '') field(8, 'g', m.signature)
  if (m.unixFds !== undefined) field(9, 'u', m.unixFds)
  w.patchU32(fieldsAt, w.length - start)
  w.align(8)
  w.raw(bodyBuf)
  return w.result()
}
