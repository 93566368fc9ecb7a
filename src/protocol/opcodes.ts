/**
 * Frame opcodes (RFC 6455 §5.2, §11.8).
 *
 * @module
 */

/** The opcodes RFC 6455 defines. */
export const Opcode = {
  /** A continuation of a fragmented message (§5.4). */
  Continuation: 0x0,
  /** A text frame: UTF-8 payload (§5.6). */
  Text: 0x1,
  /** A binary frame (§5.6). */
  Binary: 0x2,
  /** The closing handshake (§5.5.1). */
  Close: 0x8,
  /** A ping (§5.5.2). */
  Ping: 0x9,
  /** A pong (§5.5.3). */
  Pong: 0xa,
} as const;

/** One of the defined opcodes. */
export type Opcode = typeof Opcode[keyof typeof Opcode];

/** Control frames have the most significant opcode bit set (§5.5). */
export function isControlOpcode(opcode: number): boolean {
  return (opcode & 0x8) !== 0;
}

/** Opcodes 0x3-0x7 and 0xB-0xF are reserved for further frames (§5.2). */
export function isReservedOpcode(opcode: number): boolean {
  return (opcode > 0x2 && opcode < 0x8) || opcode > 0xa;
}
