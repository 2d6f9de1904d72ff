/** Start's a{sv} options: checked strictly (pure, so it is tested as data). */
import {HELPER_OPTIONS, type HelperOptionKey} from './constants.js'

export interface HelperLimits {
  /** Concurrent captures per caller uid. */
  perUid: number
  /** Concurrent captures in total. */
  total: number
  /** Longest capture, in seconds; also the duration when none is asked for. */
  maxDurationSeconds: number
  /** Largest output buffer a caller may ask for. */
  maxBufferBytes: number
  /** Start calls still waiting (credentials, polkit) from one bus connection. */
  inFlightPerCaller: number
  /** Start calls still waiting, from everyone. */
  inFlightTotal: number
}

export const DEFAULT_LIMITS: HelperLimits = {perUid: 2, total: 8, maxDurationSeconds: 3600, maxBufferBytes: 64 * 1024 * 1024, inFlightPerCaller: 4, inFlightTotal: 32}

export interface CaptureSettings {
  matchRules: string[]
  durationMs: number
  maxBytes?: number
  initialState: boolean
  bufferBytes: number
  overflow: 'drop' | 'abort'
}

export class InvalidOption extends Error {}

/** A D-Bus variant as dbus-next hands it over. */
export interface VariantLike {
  signature: string
  value: unknown
}

/** Validates the options against their signatures and the limits; throws InvalidOption with a message for the caller. */
export function parseOptions(raw: Record<string, VariantLike>, limits: HelperLimits): CaptureSettings {
  const settings: CaptureSettings = {
    matchRules: [],
    durationMs: limits.maxDurationSeconds * 1000,
    initialState: true,
    bufferBytes: 16 * 1024 * 1024,
    overflow: 'drop',
  }
  for (const [key, variant] of Object.entries(raw)) {
    if (!(key in HELPER_OPTIONS)) {
      throw new InvalidOption(`Unknown option '${key}'; supported: ${Object.keys(HELPER_OPTIONS).join(', ')}.`)
    }
    const want = HELPER_OPTIONS[key as HelperOptionKey]
    if (variant?.signature !== want) {
      throw new InvalidOption(`Option '${key}' must have type '${want}', not '${variant?.signature}'.`)
    }
    const v = variant.value
    switch (key as HelperOptionKey) {
      case 'MatchRules': {
        const rules = v as string[]
        if (rules.length > 64) throw new InvalidOption('At most 64 match rules.')
        for (const r of rules) if (r.length > 1024) throw new InvalidOption('A match rule is longer than 1024 characters.')
        settings.matchRules = rules
        break
      }
      case 'Duration': {
        const s = v as number
        if (s < 1 || s > limits.maxDurationSeconds) throw new InvalidOption(`Duration must be between 1 and ${limits.maxDurationSeconds} seconds.`)
        settings.durationMs = s * 1000
        break
      }
      case 'MaxBytes': {
        const n = Number(v as bigint | number)
        if (!Number.isSafeInteger(n) || n < 24) throw new InvalidOption('MaxBytes must be at least 24.')
        settings.maxBytes = n
        break
      }
      case 'InitialState':
        settings.initialState = v as boolean
        break
      case 'BufferSize': {
        const n = v as number
        if (n < 65_536 || n > limits.maxBufferBytes) throw new InvalidOption(`BufferSize must be between 65536 and ${limits.maxBufferBytes}.`)
        settings.bufferBytes = n
        break
      }
      case 'OnOverflow':
        if (v !== 'drop' && v !== 'abort') throw new InvalidOption("OnOverflow must be 'drop' or 'abort'.")
        settings.overflow = v
        break
    }
  }
  return settings
}
