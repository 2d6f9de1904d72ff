/**
 * What a client sends must never end the service. dbus-next's message reader
 * runs in a stream 'readable' handler: a message it cannot decode (a `h` whose
 * index is beyond the fds attached, a variant it cannot convert) throws out of
 * that handler and, in a service, ends the process; and the fds a message
 * brought are handed to nobody unless a method takes them.
 *
 * So the reader is replaced (dbus-next's connection looks it up on its
 * module's exports when a connection is set up) by one that, per message:
 * frames it from the fixed header, takes exactly the fds its UNIX_FDS field
 * names (surplus fds are closed), decodes it and checks that dbus-next can
 * convert it, inside try/catch. A message that cannot be decoded or is larger
 * than the service accepts is delivered without a body and is marked, so the
 * service answers it with an error. After the message has been handled
 * (synchronously), every fd it brought that no handler claimed is closed.
 *
 * Install it before the first connection (importing this module does).
 */
import {closeSync} from 'node:fs'
import type {Duplex} from 'node:stream'
import type dbus from 'dbus-next'
import dbusMessage from 'dbus-next/lib/message.js'
import DBusBuffer from 'dbus-next/lib/dbus-buffer.js'
import compat from 'dbus-next/lib/marshall-compat.js'
import messageType from 'dbus-next/lib/message-type.js'
import constants from 'dbus-next/lib/constants.js'
import signature from 'dbus-next/lib/signature.js'
import {frameLength, parseMessage} from '../capture/wire.js'

/** Largest message the service decodes (its calls are small); larger ones are answered with an error. */
export const MAX_DECODED_MESSAGE = 1024 * 1024

interface RawMessage {
  serial: number
  type: number
  flags: number
  body?: unknown[]
  signature?: string
  [field: string]: unknown
}

interface Current {
  fds: number[]
  claimed: Set<number>
  /** Why the message could not be decoded, when it could not. */
  undecodable: string | null
}

let current: Current | null = null
let closedTotal = 0
let log: (line: string) => void = () => {}

/** Where the guard reports what it refused (the service's log). */
export function setGuardLog(fn: (line: string) => void): void {
  log = fn
}

/**
 * Takes ownership of `fd`, an fd of the message being handled (from a `h`
 * argument). Returns false when it is not one of that message's fds.
 */
export function claimFd(fd: unknown): fd is number {
  if (!current || typeof fd !== 'number' || !current.fds.includes(fd) || current.claimed.has(fd)) return false
  current.claimed.add(fd)
  return true
}

/** Why the message being handled could not be decoded, or null when it was. */
export function undecodableReason(): string | null {
  return current?.undecodable ?? null
}

/** Fds received and closed because nothing claimed them (for tests and the log). */
export function unclaimedFdsClosed(): number {
  return closedTotal
}

function closeAll(fds: Iterable<number>): void {
  for (const fd of fds) {
    try {
      closeSync(fd)
    } catch {
      // not open
    }
    closedTotal++
  }
}

interface FdSocket extends Duplex {
  _wrap?: {fds: number[]} | null
}

const LE = constants.endianness.le
/** The element type of the header fields array, a(yv). */
const FIELD = signature.parseSignature('(yv)')[0]

function decode(header: Buffer, rest: Buffer, fds: number[], opts: unknown): RawMessage {
  const endian = header[0]
  const fieldsLength = endian === LE ? header.readUInt32LE(12) : header.readUInt32BE(12)
  const bodyLength = endian === LE ? header.readUInt32LE(4) : header.readUInt32BE(4)
  const buf = new DBusBuffer(rest, 0, endian, fds, opts)
  const fields = buf.readArray(FIELD, fieldsLength) as Array<[number, [unknown, [unknown]]]>
  buf.align(3)
  const msg: RawMessage = {
    serial: endian === LE ? header.readUInt32LE(8) : header.readUInt32BE(8),
    type: header[1],
    flags: header[2],
  }
  for (const [code, value] of fields) {
    const name = constants.headerTypeName[code]
    if (name) msg[name] = value[1][0]
  }
  if (bodyLength > 0 && msg.signature) msg.body = buf.read(msg.signature)
  return msg
}

/** The header fields of a message we will not decode, from our own parser (no body). */
function headerOnly(frame: Buffer): RawMessage {
  const p = parseMessage(frame, true)
  const msg: RawMessage = {serial: p.serial, type: p.type, flags: frame[2]}
  if (p.path !== undefined) msg.path = p.path
  if (p.interface !== undefined) msg.interface = p.interface
  if (p.member !== undefined) msg.member = p.member
  if (p.sender !== undefined) msg.sender = p.sender
  if (p.destination !== undefined) msg.destination = p.destination
  if (p.replySerial !== undefined) msg.replySerial = p.replySerial
  if (p.errorName !== undefined) msg.errorName = p.errorName
  return msg
}

function guardedUnmarshal(stream: FdSocket, onMessage: (msg: RawMessage) => void, opts: unknown): void {
  let header: Buffer | null = null
  let need = 0
  const step = (): boolean => {
    if (!header) {
      header = stream.read(16) as Buffer | null
      if (!header) return false
      const len = header.length < 16 ? -1 : frameLength(header)
      if (len < 0) {
        // Not D-Bus framing: only a broken bus sends that. Nothing after it can be trusted.
        log('fatal: the bus sent data that is not a D-Bus message')
        stream.destroy(new Error('the bus sent data that is not a D-Bus message'))
        return false
      }
      need = len - 16
    }
    let rest: Buffer
    if (need > 0) {
      const got = stream.read(need) as Buffer | {data: Buffer} | null
      if (!got) return false
      rest = Buffer.isBuffer(got) ? got : got.data
    } else rest = Buffer.alloc(0)
    const head = header
    header = null
    const frame = Buffer.concat([head, rest])
    let want: number
    try {
      want = parseMessage(frame, true).unixFds
    } catch {
      want = 0
    }
    const queue = stream._wrap?.fds ?? []
    const fds = queue.splice(0, Math.min(want, queue.length))
    // Fds arrive with the bytes they were sent with: when every byte received
    // has been framed, fds still queued belong to no message to come.
    if (stream.readableLength === 0 && queue.length > 0) {
      log(`closed ${queue.length} fds no message declared`)
      closeAll(queue.splice(0))
    }
    let msg: RawMessage | null = null
    let undecodable: string | null = null
    if (frame.length > MAX_DECODED_MESSAGE) undecodable = `the message is larger than ${MAX_DECODED_MESSAGE} bytes`
    else if (fds.length < want) undecodable = `the message declares ${want} fds but ${fds.length} came with it`
    else {
      try {
        msg = decode(head, rest, fds, opts)
        // The connection converts it next: check on a copy that it can.
        new messageType.Message(compat.messageToJsFmt(structuredClone(msg)))
      } catch (err) {
        msg = null
        undecodable = `the message could not be decoded: ${(err as Error).message}`
      }
    }
    if (!msg) {
      try {
        msg = headerOnly(frame)
      } catch {
        closeAll(fds)
        return true
      }
      if (msg.type === constants.MessageType.METHOD_RETURN) {
        // A reply to one of our calls that we cannot read: fail that call.
        msg.type = constants.MessageType.ERROR
        msg.errorName = 'org.freedesktop.DBus.Error.InvalidArgs'
      }
    }
    current = {fds, claimed: new Set(), undecodable}
    try {
      onMessage(msg)
    } catch (err) {
      log(`error while handling a message: ${(err as Error).message}`)
    } finally {
      const unclaimed = fds.filter((fd) => !current!.claimed.has(fd))
      current = null
      closeAll(unclaimed)
    }
    return true
  }
  stream.on('readable', () => {
    for (let failures = 0; failures < 3; ) {
      try {
        if (!step()) break
        failures = 0
      } catch (err) {
        failures++
        log(`error while reading a message: ${(err as Error).message}`)
      }
    }
  })
}

const exportsObject = dbusMessage as unknown as {unmarshalMessages: unknown; __sysextGuard?: boolean}
if (!exportsObject.__sysextGuard) {
  exportsObject.unmarshalMessages = guardedUnmarshal
  exportsObject.__sysextGuard = true
}

/**
 * bus.call(msg), keeping the fds its reply brought (they are closed once the
 * reply is handled otherwise). The caller closes the returned fds.
 */
export async function callClaimingFds(bus: dbus.MessageBus, msg: dbus.Message): Promise<{reply: dbus.Message | null; fds: number[]}> {
  const fds: number[] = []
  const listener = (m: dbus.Message): void => {
    if (!current || Number(m.replySerial) !== Number(msg.serial)) return
    for (const fd of current.fds) if (claimFd(fd)) fds.push(fd)
  }
  bus.on('message', listener)
  try {
    return {reply: await bus.call(msg), fds}
  } catch (err) {
    closeAll(fds)
    throw err
  } finally {
    bus.off('message', listener)
  }
}
