/**
 * What the fuzz tests of both root services share: a seeded PRNG, a raw
 * connection that is opened again when the bus throws it out for an invalid
 * message, a round-trip barrier, and the service's liveness (Ping, fd count).
 */
import assert from 'node:assert/strict'
import {readdirSync} from 'node:fs'
import dbus from 'dbus-next'
import {BusConnection} from '../../src/capture/connection.js'
import type {Service} from './helper-service.js'
import {type RawMessageSpec, rawMessage} from './raw-message.js'

/** mulberry32: a small seeded PRNG, so that a failure is reproducible. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export class FuzzClient {
  /** The raw connection messages go out on (null before the first send). */
  conn: BusConnection | null = null
  /** How often the bus closed the connection after a message it refused. */
  reconnects = 0

  constructor(
    private readonly address: string,
    private readonly service: Service,
    private readonly pinger: dbus.MessageBus,
    private readonly busName: string,
    private readonly trace: (what: string) => void = () => undefined,
  ) {}

  fdCount(): number {
    return readdirSync(`/proc/${this.service.child.pid}/fd`).length
  }

  alive(): boolean {
    return this.service.child.exitCode === null && this.service.child.signalCode === null
  }

  /** The service is up and answers Peer.Ping within 20 s. */
  async ping(): Promise<void> {
    assert.ok(this.alive(), `the service exited; its log:\n${this.service.log()}`)
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([
        this.pinger.call(new dbus.Message({destination: this.busName, path: '/', interface: 'org.freedesktop.DBus.Peer', member: 'Ping'})),
        new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`no Ping answer; service log:\n${this.service.log()}`)), 20_000))),
      ])
    } finally {
      clearTimeout(timer)
    }
  }

  /** The raw connection, a new one when the bus threw the last one out. */
  async client(): Promise<BusConnection> {
    if (this.conn && !this.conn.isClosed) return this.conn
    if (this.conn) this.reconnects++
    this.conn = await BusConnection.open(this.address, {unixFd: true})
    return this.conn
  }

  /** Sends one raw message with `fds` attached; returns its serial. A refused message only costs the connection. */
  async send(spec: Omit<RawMessageSpec, 'serial'>, fds: number[] = []): Promise<number> {
    const c = await this.client()
    const serial = c.nextSerial()
    this.trace(`send ${serial} on ${c.uniqueName}`)
    try {
      await c.sendRaw(rawMessage({...spec, serial}), fds)
      this.trace('sent')
    } catch (err) {
      this.trace(`send failed: ${(err as Error).message}`)
    }
    return serial
  }

  /** Waits until the bus has processed what was sent (a round trip), or the connection is gone. */
  async barrier(): Promise<void> {
    if (!this.conn || this.conn.isClosed) return
    await this.conn.callDriver('GetId').catch(() => undefined)
  }

  close(): void {
    this.conn?.close()
  }
}
