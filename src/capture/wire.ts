/**
 * Minimal D-Bus wire format: enough to marshal the few calls we make (Hello,
 * BecomeMonitor, ListNames, GetNameOwner) and to read their replies. Captured
 * messages are never parsed: `frameLength` only reads the fixed header.
 */

export const enum MessageType {
  MethodCall = 1,
  MethodReturn = 2,
  Error = 3,
  Signal = 4,
}

export const enum HeaderField {
  Path = 1,
  Interface = 2,
  Member = 3,
  ErrorName = 4,
  ReplySerial = 5,
  Destination = 6,
  Sender = 7,
  Signature = 8,
  UnixFds = 9,
}

/** The largest message the spec allows (2^27 bytes). */
export const MAX_MESSAGE_LENGTH = 134_217_728

const LITTLE = 0x6c // 'l'
const BIG = 0x42 // 'B'

/**
 * Length of the message starting at `offset` in `buf`, from its fixed header:
 * 16 + header-fields length padded to 8 + body length. Needs 16 bytes.
 * Returns -1 when the header is not a D-Bus header (bad byte order mark,
 * version, or a length over the spec's maximum).
 */
export function frameLength(buf: Buffer, offset = 0): number {
  const order = buf[offset]
  let bodyLength: number
  let fieldsLength: number
  if (order === LITTLE) {
    bodyLength = buf.readUInt32LE(offset + 4)
    fieldsLength = buf.readUInt32LE(offset + 12)
  } else if (order === BIG) {
    bodyLength = buf.readUInt32BE(offset + 4)
    fieldsLength = buf.readUInt32BE(offset + 12)
  } else {
    return -1
  }
  if (buf[offset + 3] !== 1) return -1
  const total = 16 + ((fieldsLength + 7) & ~7) + bodyLength
  return total > MAX_MESSAGE_LENGTH ? -1 : total
}

/** Little-endian writer with D-Bus alignment (also the fuzz tests' marshaller). */
export class Writer {
  private buf = Buffer.alloc(256)
  length = 0

  private ensure(n: number): void {
    if (this.length + n <= this.buf.length) return
    const next = Buffer.alloc(Math.max(this.buf.length * 2, this.length + n))
    this.buf.copy(next, 0, 0, this.length)
    this.buf = next
  }

  align(n: number): void {
    const pad = (n - (this.length % n)) % n
    this.ensure(pad)
    this.buf.fill(0, this.length, this.length + pad)
    this.length += pad
  }

  u8(v: number): void {
    this.ensure(1)
    this.buf[this.length++] = v
  }

  u32(v: number): void {
    this.align(4)
    this.ensure(4)
    this.buf.writeUInt32LE(v >>> 0, this.length)
    this.length += 4
  }

  u64(v: bigint): void {
    this.align(8)
    this.ensure(8)
    this.buf.writeBigUInt64LE(BigInt.asUintN(64, v), this.length)
    this.length += 8
  }

  string(s: string): void {
    const bytes = Buffer.from(s, 'utf8')
    this.u32(bytes.length)
    this.raw(bytes)
    this.u8(0)
  }

  signature(s: string): void {
    const bytes = Buffer.from(s, 'ascii')
    this.u8(bytes.length)
    this.raw(bytes)
    this.u8(0)
  }

  raw(bytes: Buffer): void {
    this.ensure(bytes.length)
    bytes.copy(this.buf, this.length)
    this.length += bytes.length
  }

  patchU32(at: number, v: number): void {
    this.buf.writeUInt32LE(v >>> 0, at)
  }

  result(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.length))
  }
}

/** Body values we can marshal: strings, uint32s, arrays of strings. */
export type BodyValue = string | number | string[]

function writeBody(w: Writer, signature: string, values: BodyValue[]): void {
  let i = 0
  for (const code of signature.match(/as|[a-z]/g) ?? []) {
    const v = values[i++]
    if (code === 's' && typeof v === 'string') w.string(v)
    else if (code === 'u' && typeof v === 'number') w.u32(v)
    else if (code === 'as' && Array.isArray(v)) {
      w.u32(0)
      const lengthAt = w.length - 4
      // string elements align to 4, which the length field already is
      const start = w.length
      for (const s of v) w.string(s)
      w.patchU32(lengthAt, w.length - start)
    } else throw new TypeError(`cannot marshal ${JSON.stringify(v)} as '${code}'`)
  }
  if (i !== values.length) throw new TypeError(`signature '${signature}' does not match ${values.length} values`)
}

export interface MethodCall {
  serial: number
  /** Default: a method call. Signals have no destination. */
  type?: MessageType.MethodCall | MessageType.Signal
  destination?: string
  path: string
  interface: string
  member: string
  signature?: string
  body?: BodyValue[]
}

/** Marshals a method call or a signal (little endian). */
export function marshalCall(call: MethodCall): Buffer {
  const body = new Writer()
  if (call.signature) writeBody(body, call.signature, call.body ?? [])
  const w = new Writer()
  w.u8(LITTLE)
  w.u8(call.type ?? MessageType.MethodCall)
  w.u8(0) // flags
  w.u8(1) // protocol version
  w.u32(body.length)
  w.u32(call.serial)
  w.u32(0) // header fields array length, patched below
  const fieldsStart = w.length // 16: already 8-aligned
  const field = (code: HeaderField, sig: string, write: () => void): void => {
    w.align(8)
    w.u8(code)
    w.signature(sig)
    write()
  }
  field(HeaderField.Path, 'o', () => w.string(call.path))
  field(HeaderField.Interface, 's', () => w.string(call.interface))
  field(HeaderField.Member, 's', () => w.string(call.member))
  if (call.destination !== undefined) field(HeaderField.Destination, 's', () => w.string(call.destination!))
  if (call.signature) field(HeaderField.Signature, 'g', () => w.signature(call.signature!))
  w.patchU32(12, w.length - fieldsStart)
  w.align(8)
  w.raw(body.result())
  return w.result()
}

/** The header of a received message, with the fields we use. */
export interface ParsedMessage {
  type: number
  serial: number
  replySerial?: number
  errorName?: string
  member?: string
  path?: string
  interface?: string
  sender?: string
  destination?: string
  signature: string
  /** The UNIX_FDS header field: how many fds came with the message. */
  unixFds: number
  /** Body values, when the signature is one we read ('s', 'as', 'u'); else []. */
  body: BodyValue[]
}

class Reader {
  constructor(private readonly buf: Buffer, public pos: number, private readonly little: boolean, private readonly base: number) {}

  align(n: number): void {
    const rel = this.pos - this.base
    this.pos += (n - (rel % n)) % n
  }

  u8(): number {
    return this.buf[this.pos++]
  }

  u32(): number {
    this.align(4)
    const v = this.little ? this.buf.readUInt32LE(this.pos) : this.buf.readUInt32BE(this.pos)
    this.pos += 4
    return v
  }

  string(): string {
    const n = this.u32()
    const s = this.buf.toString('utf8', this.pos, this.pos + n)
    this.pos += n + 1
    return s
  }

  signature(): string {
    const n = this.u8()
    const s = this.buf.toString('ascii', this.pos, this.pos + n)
    this.pos += n + 1
    return s
  }
}

/** Skips one value of a basic or simple container type; throws on what we don't know. */
function skipValue(r: Reader, sig: string): void {
  switch (sig[0]) {
    case 'y': r.pos += 1; return
    case 'b': case 'u': case 'i': case 'h': r.u32(); return
    case 'n': case 'q': r.align(2); r.pos += 2; return
    case 'x': case 't': case 'd': r.align(8); r.pos += 8; return
    case 's': case 'o': r.string(); return
    case 'g': r.signature(); return
    case 'a': {
      const n = r.u32()
      const elemAlign = /^[xtd({]/.test(sig[1]) ? 8 : 1
      r.align(elemAlign)
      r.pos += n
      return
    }
    default: throw new Error(`unsupported header value type '${sig}'`)
  }
}

/** Parses the header fields (and, unless headerOnly, a simple body) of one complete frame. */
export function parseMessage(frame: Buffer, headerOnly = false): ParsedMessage {
  const little = frame[0] === LITTLE
  const r = new Reader(frame, 12, little, 0)
  const fieldsLength = r.u32()
  const end = 16 + fieldsLength
  const msg: ParsedMessage = {
    type: frame[1],
    serial: little ? frame.readUInt32LE(8) : frame.readUInt32BE(8),
    signature: '',
    unixFds: 0,
    body: [],
  }
  while (r.pos < end) {
    r.align(8)
    const code = r.u8()
    const sig = r.signature()
    if (code === HeaderField.ReplySerial && sig === 'u') msg.replySerial = r.u32()
    else if (code === HeaderField.ErrorName && sig === 's') msg.errorName = r.string()
    else if (code === HeaderField.Member && sig === 's') msg.member = r.string()
    else if (code === HeaderField.Path && sig === 'o') msg.path = r.string()
    else if (code === HeaderField.Interface && sig === 's') msg.interface = r.string()
    else if (code === HeaderField.Sender && sig === 's') msg.sender = r.string()
    else if (code === HeaderField.Destination && sig === 's') msg.destination = r.string()
    else if (code === HeaderField.Signature && sig === 'g') msg.signature = r.signature()
    else if (code === HeaderField.UnixFds && sig === 'u') msg.unixFds = r.u32()
    else skipValue(r, sig)
  }
  if (headerOnly) return msg
  const bodyStart = (end + 7) & ~7
  const br = new Reader(frame, bodyStart, little, bodyStart)
  try {
    for (const code of msg.signature.match(/as|./g) ?? []) {
      if (code === 's') msg.body.push(br.string())
      else if (code === 'u') msg.body.push(br.u32())
      else if (code === 'as') {
        const n = br.u32()
        const stop = br.pos + n
        const list: string[] = []
        while (br.pos < stop) list.push(br.string())
        msg.body.push(list)
      } else break
    }
  } catch {
    // A body we cannot read is not an error for our purposes.
  }
  return msg
}

/**
 * The UNIX_FDS header field of a frame, found without parsing: a field
 * starts 8-aligned with code 9 and signature "u" (bytes 09 01 75 00), and no
 * bus-validated field value has those bytes at an 8-aligned offset (names and
 * paths hold no control characters). 0 when absent.
 */
export function unixFdsOf(frame: Buffer): number {
  const little = frame[0] === LITTLE
  const end = 16 + (little ? frame.readUInt32LE(12) : frame.readUInt32BE(12))
  for (let at = 16; at + 8 <= end; at += 8) {
    if (frame[at] === 9 && frame[at + 1] === 1 && frame[at + 2] === 0x75 && frame[at + 3] === 0) {
      return little ? frame.readUInt32LE(at + 4) : frame.readUInt32BE(at + 4)
    }
  }
  return 0
}
