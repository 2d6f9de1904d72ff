import assert from 'node:assert/strict'
import {describe, it} from 'node:test'
import {type ElfInfo, parseElf, parseElfFile} from '../../src/formats/elf.js'
import {systemdArchitecture} from '../../src/sysext/host.js'
import {BASE_ADDRESS, EM, buildElf} from '../lib/elf-builder.js'


/** A reader over a buffer that records the largest request, to prove reads stay capped. */
function bufferReader(buf: Buffer): {read: (offset: number, length: number) => Buffer; largest: () => number} {
  let largest = 0
  return {
    read: (offset, length) => {
      largest = Math.max(largest, length)
      return buf.subarray(offset, offset + length)
    },
    largest: () => largest,
  }
}

const parseBuffer = (buf: Buffer): ElfInfo => parseElf(bufferReader(buf).read)

/** Deterministic pseudo-random bytes (xorshift), so a failing case can be replayed. */
function prng(seed: number): () => number {
  let x = seed
  return () => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return (x >>> 0) & 0xff
  }
}

describe('parseElf', () => {
  it('reads interpreter, DT_NEEDED and architecture of this machine\'s /bin/ls', () => {
    const info = parseElfFile('/bin/ls')
    assert.equal(info.malformed, undefined)
    assert.equal(info.architecture, systemdArchitecture())
    assert.match(info.interpreter ?? '', /^\/.*ld.*\.so/)
    assert.ok(info.needed.includes('libc.so.6'), `needed: ${info.needed.join(', ')}`)
    assert.ok(info.type === 'exec' || info.type === 'dyn')
  })

  it('reads the node binary running this test', () => {
    const info = parseElfFile(process.execPath)
    assert.equal(info.malformed, undefined)
    assert.equal(info.architecture, systemdArchitecture())
  })

  for (const bits of [32, 64] as const) {
    for (const byteOrder of ['le', 'be'] as const) {
      it(`round-trips a ${bits}-bit ${byteOrder === 'le' ? 'little' : 'big'}-endian object`, () => {
        const info = parseBuffer(buildElf({
          bits, byteOrder, machine: EM.RISCV, type: 'exec', interpreter: '/lib/ld-linux-riscv.so.1',
          needed: ['libfoo.so.1', 'libc.so.6'], runpath: '$ORIGIN/../lib/foo:/opt/foo/lib', soname: 'foo',
        }))
        assert.deepEqual(info, {
          bits, byteOrder, machine: EM.RISCV, architecture: bits === 64 ? 'riscv64' : 'riscv32', type: 'exec',
          interpreter: '/lib/ld-linux-riscv.so.1', needed: ['libfoo.so.1', 'libc.so.6'],
          runpath: ['$ORIGIN/../lib/foo', '/opt/foo/lib'], runpathTag: 'DT_RUNPATH', soname: 'foo',
        })
      })
    }
  }

  it('names architectures the way systemd does, by class and byte order', () => {
    const arch = (machine: number, bits: 32 | 64, byteOrder: 'le' | 'be'): string | undefined =>
      parseBuffer(buildElf({machine, bits, byteOrder})).architecture
    assert.equal(arch(EM.X86_64, 64, 'le'), 'x86-64')
    assert.equal(arch(EM.I386, 32, 'le'), 'x86')
    assert.equal(arch(EM.AARCH64, 64, 'le'), 'arm64')
    assert.equal(arch(EM.AARCH64, 64, 'be'), 'arm64-be')
    assert.equal(arch(EM.ARM, 32, 'le'), 'arm')
    assert.equal(arch(EM.PPC64, 64, 'le'), 'ppc64-le')
    assert.equal(arch(EM.PPC64, 64, 'be'), 'ppc64')
    assert.equal(arch(22, 64, 'be'), 's390x')
    assert.equal(arch(258, 64, 'le'), 'loongarch64')
    assert.equal(arch(0x1234, 64, 'le'), undefined)
  })

  it('keeps DT_RPATH when there is no DT_RUNPATH, and ignores it when there is', () => {
    const rpathOnly = parseBuffer(buildElf({needed: ['libx.so'], rpath: '/opt/a'}))
    assert.deepEqual([rpathOnly.runpath, rpathOnly.runpathTag], [['/opt/a'], 'DT_RPATH'])
    const both = parseBuffer(buildElf({needed: ['libx.so'], rpath: '/opt/a', runpath: '/opt/b'}))
    assert.deepEqual([both.runpath, both.runpathTag], [['/opt/b'], 'DT_RUNPATH'])
  })

  it('parses a static object with no dynamic section', () => {
    const info = parseBuffer(buildElf({type: 'exec'}))
    assert.deepEqual([info.malformed, info.interpreter, info.needed, info.runpath], [undefined, undefined, [], []])
  })

  it('marks every truncation of a valid object as malformed, without throwing', () => {
    const full = buildElf({bits: 32, byteOrder: 'be', interpreter: '/lib/ld.so.1', needed: ['libc.so.6'], runpath: '$ORIGIN'})
    for (let length = 0; length < full.length; length++) {
      const info = parseBuffer(full.subarray(0, length))
      assert.ok(info.malformed, `a ${length}-byte prefix parsed as valid`)
    }
  })

  it('survives random garbage behind the ELF magic and random corruption of valid objects', () => {
    const next = prng(0x5eed)
    const valid = buildElf({interpreter: '/lib64/ld-linux-x86-64.so.2', needed: ['liba.so.1', 'libb.so.2'], runpath: '$ORIGIN'})
    let largest = 0
    for (let round = 0; round < 3000; round++) {
      let buf: Buffer
      if (round % 2 === 0) {
        buf = Buffer.from(Array.from({length: 16 + (round % 300)}, next))
        buf.writeUInt32BE(0x7f454c46, 0)
        buf[4] = 1 + (round % 2)
        buf[5] = 1 + ((round >> 1) % 2)
        buf[6] = 1
      } else {
        buf = Buffer.from(valid)
        for (let flips = 0; flips < 4; flips++) buf[(next() << 8 | next()) % buf.length] = next()
      }
      const reader = bufferReader(buf)
      assert.doesNotThrow(() => parseElf(reader.read))
      largest = Math.max(largest, reader.largest())
    }
    assert.ok(largest <= 64 * 1024, `a read of ${largest} bytes was requested`)
  })

  it('reports a program header count over the cap', () => {
    const buf = buildElf({needed: ['libc.so.6']})
    buf.writeUInt16LE(0xffff, 56) // e_phnum of ELF64
    assert.match(parseBuffer(buf).malformed ?? '', /program headers/)
  })

  it('reports a program header table at an impossible offset', () => {
    const buf = buildElf({needed: ['libc.so.6']})
    buf.writeBigUInt64LE(0xffffffffffffff00n, 32) // e_phoff of ELF64
    assert.ok(parseBuffer(buf).malformed)
  })

  it('reports a DT_STRTAB outside every PT_LOAD segment', () => {
    const info = parseBuffer(buildElf({needed: ['libc.so.6'], strtabAddress: BASE_ADDRESS + 0x100000}))
    assert.match(info.malformed ?? '', /DT_STRTAB .* not inside any PT_LOAD/)
  })

  it('reports input that is not ELF', () => {
    assert.match(parseBuffer(Buffer.from('#!/bin/sh\necho hi\n')).malformed ?? '', /no ELF magic/)
    const wrongClass = buildElf()
    wrongClass[4] = 3
    assert.match(parseBuffer(wrongClass).malformed ?? '', /unknown ELF class 3/)
  })

  it('turns a failing reader into malformed instead of throwing', () => {
    const info = parseElf(() => {
      throw Object.assign(new Error('EIO: i/o error, read'), {code: 'EIO'})
    })
    assert.match(info.malformed ?? '', /cannot be read: EIO/)
  })
})
