// Minimal typings for usocket 1.x (unix sockets with descriptor passing).
declare module 'usocket' {
  import {Duplex} from 'node:stream'

  export class USocket extends Duplex {
    constructor(opts?: string | {path?: string; fd?: number; allowHalfOpen?: boolean}, cb?: () => void)
    fd?: number
    connect(path: string | {path?: string; fd?: number}, cb?: () => void): void
    /** With a second argument: returns {data, fds} and takes `count` fds (null = all). */
    read(size?: number | null): Buffer | null
    read(size: number | null, count: number | null): {data: Buffer | null; fds: number[]} | null
    destroy(): this
  }
}
