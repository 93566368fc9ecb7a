/**
 * Room for a frame header in front of received payloads.
 *
 * A large received binary message is often sent on as it is: echoed, relayed
 * to other connections, forwarded. A server frame is its header followed by
 * the payload, and a socket write of one buffer costs far less than two (or
 * than copying the payload next to a fresh header). So where the assembler
 * can, it leaves the bytes just before a large payload unused (the client's
 * frame header was there, or it allocated a few bytes more) and records the
 * delivered view here; a server sending that very view writes the header
 * into the room and queues header and payload as one chunk, with no copy.
 *
 * Safe because a server frame header depends only on the payload's length
 * and the opcode and flags a plain binary send always uses: two sends of the
 * same view, even on different connections, write the same bytes there.
 * Entries are keyed by the view object and die with it.
 *
 * @module
 */

const rooms = new WeakMap<Uint8Array, number>();

/** Records that the `bytes` just before `view` are free for a frame header. */
export function giveRoom(view: Uint8Array, bytes: number): void {
  rooms.set(view, bytes);
}

/** Free bytes recorded just before `view` (0 for views Sluice did not deliver). */
export function roomBefore(view: Uint8Array): number {
  return rooms.get(view) ?? 0;
}
