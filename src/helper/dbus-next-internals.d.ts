// The dbus-next internals the message guard (dbus-guard.ts) uses; dbus-next 0.10.x.
declare module 'dbus-next/lib/message.js' {
  const message: {unmarshalMessages: unknown}
  export default message
}
declare module 'dbus-next/lib/dbus-buffer.js' {
  export default class DBusBuffer {
    constructor(buffer: Buffer, startPos: number, endian: number, fds: number[] | null, options: unknown)
    readArray(elementType: unknown, length: number): unknown[]
    align(power: number): void
    read(signature: string): unknown[]
  }
}
declare module 'dbus-next/lib/marshall-compat.js' {
  const compat: {messageToJsFmt(message: object): object}
  export default compat
}
declare module 'dbus-next/lib/message-type.js' {
  const messageType: {Message: new (raw: object) => object}
  export default messageType
}
declare module 'dbus-next/lib/constants.js' {
  const constants: {
    endianness: {le: number; be: number}
    headerTypeName: Array<string | null>
    MessageType: {METHOD_CALL: number; METHOD_RETURN: number; ERROR: number; SIGNAL: number}
  }
  export default constants
}
declare module 'dbus-next/lib/signature.js' {
  const signature: {parseSignature(s: string): unknown[]}
  export default signature
}
