/**
 * The one error type that reaches users. `code` is stable (it is part of the
 * --json schema), `message` says what failed and where, `hint` what to do next.
 */
export interface HelperErrorOptions {
  hint?: string
  /** The step that failed, e.g. 'preflight', 'refresh', 'verify'. */
  step?: string
  /** The file the error is about, when there is one. */
  file?: string
  /** Process exit code for the CLI (1 = failure, 2 = usage error). */
  exit?: number
  cause?: unknown
  /** Structured details for --json (e.g. validation findings, rollback outcome). */
  data?: Record<string, unknown>
}

export class HelperError extends Error {
  readonly code: string
  readonly hint?: string
  readonly step?: string
  readonly file?: string
  readonly exit: number
  readonly data?: Record<string, unknown>

  constructor(code: string, message: string, options: HelperErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : {cause: options.cause})
    this.name = 'HelperError'
    this.code = code
    this.hint = options.hint
    this.step = options.step
    this.file = options.file
    this.exit = options.exit ?? 1
    this.data = options.data
  }

  toJSON(): {code: string; message: string; hint?: string; step?: string; file?: string; data?: Record<string, unknown>} {
    return {code: this.code, message: this.message, hint: this.hint, step: this.step, file: this.file, data: this.data}
  }
}

/** A usage error: bad arguments or flags. Exit code 2. */
export function usageError(code: string, message: string, hint?: string): HelperError {
  return new HelperError(code, message, {hint, exit: 2})
}

/** Wraps a Node filesystem error into a HelperError naming the path and the cause. */
export function fsError(code: string, what: string, path: string, err: unknown, hint?: string): HelperError {
  const errno = (err as NodeJS.ErrnoException)?.code
  const reason =
    errno === 'ENOENT' ? 'No such file or directory'
    : errno === 'EACCES' || errno === 'EPERM' ? 'Permission denied'
    : errno === 'ENOTDIR' ? 'Not a directory'
    : errno === 'EROFS' ? 'Read-only file system'
    : errno === 'ENOSPC' ? 'No space left on device'
    : errno === 'EDQUOT' ? 'Disk quota exceeded'
    : (err as Error)?.message ?? String(err)
  return new HelperError(code, `${what} '${path}': ${reason}.`, {hint, file: path, cause: err})
}
