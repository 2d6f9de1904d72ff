/**
 * Classic pcap, exactly as `dbus-monitor --pcap` writes it: host byte order,
 * magic 0xa1b2c3d4, version 2.4, snaplen 2^27, link type 231 (DBUS), one
 * record per whole message with a microsecond timestamp.
 */
import {endianness} from 'node:os'

export const PCAP_MAGIC = 0xa1b2c3d4
export const PCAP_SNAPLEN = 134_217_728
export const LINKTYPE_DBUS = 231
export const PCAP_HEADER_LENGTH = 24
export const PCAP_RECORD_HEADER_LENGTH = 16

const LE = endianness() === 'LE'

function u32(buf: Buffer, value: number, at: number): void {
  if (LE) buf.writeUInt32LE(value, at)
  else buf.writeUInt32BE(value, at)
}

function u16(buf: Buffer, value: number, at: number): void {
  if (LE) buf.writeUInt16LE(value, at)
  else buf.writeUInt16BE(value, at)
}

/** The 24-byte global header. */
export function pcapHeader(): Buffer {
  const buf = Buffer.alloc(PCAP_HEADER_LENGTH)
  u32(buf, PCAP_MAGIC, 0)
  u16(buf, 2, 4) // version major
  u16(buf, 4, 6) // version minor
  // thiszone and sigfigs stay 0
  u32(buf, PCAP_SNAPLEN, 16)
  u32(buf, LINKTYPE_DBUS, 20)
  return buf
}

/** Writes a record header for a `length`-byte message received at `ms` (epoch ms, fractional). */
export function writeRecordHeader(buf: Buffer, at: number, ms: number, length: number): void {
  const sec = Math.floor(ms / 1000)
  const usec = Math.min(999_999, Math.floor((ms - sec * 1000) * 1000))
  u32(buf, sec >>> 0, at)
  u32(buf, usec, at + 4)
  u32(buf, length, at + 8)
  u32(buf, length, at + 12)
}

export interface PcapRecord {
  seconds: number
  microseconds: number
  data: Buffer
}

/** Reads a classic pcap file written in host byte order (for tests and tools). */
export function readPcap(file: Buffer): {header: Buffer; linkType: number; records: PcapRecord[]} {
  if (file.length < PCAP_HEADER_LENGTH) throw new Error('too short for a pcap header')
  const r32 = (at: number): number => (LE ? file.readUInt32LE(at) : file.readUInt32BE(at))
  if (r32(0) !== PCAP_MAGIC) throw new Error('not a classic pcap file in host byte order')
  const records: PcapRecord[] = []
  let at = PCAP_HEADER_LENGTH
  while (at + PCAP_RECORD_HEADER_LENGTH <= file.length) {
    const caplen = r32(at + 8)
    const end = at + PCAP_RECORD_HEADER_LENGTH + caplen
    if (end > file.length) throw new Error(`record at offset ${at} is truncated`)
    records.push({seconds: r32(at), microseconds: r32(at + 4), data: file.subarray(at + PCAP_RECORD_HEADER_LENGTH, end)})
    at = end
  }
  if (at !== file.length) throw new Error(`${file.length - at} trailing bytes`)
  return {header: file.subarray(0, PCAP_HEADER_LENGTH), linkType: r32(20), records}
}
