/**
 * Chat: rooms, nicknames, join and leave notices, the last 50 messages of a
 * room on join, "is typing" notices.
 *
 * - Auth in the handshake: the page gets a token for a nickname from
 *   `GET /api/chat/token?nick=ada` and connects to `/chat?token=…`;
 *   `onUpgrade` refuses a missing or unknown token with 401, before any
 *   WebSocket exists. The nickname comes from the token, not the client.
 * - Each room is a pub/sub topic (`chat:<room>`): a message is framed once
 *   for the whole room, and publishing never waits for a reader, so a busy
 *   room or a slow member never holds up another room.
 * - A member that falls 1 MiB behind is closed (policy `"close"`, code
 *   1008) rather than silently skipped: a chat must not lose lines. Its page
 *   reconnects and gets the room's history again.
 *
 * Client → server (JSON text): `{type:"join",room}`, `{type:"leave",room}`,
 * `{type:"say",room,text}`, `{type:"typing",room}`.
 * Server → client: `welcome`, `history` (on join), `message`, `join`,
 * `leave`, `typing`, `error`.
 *
 * @module
 */

import { HandshakeError, type Message, type Server, type UpgradeRequestInfo } from "../mod.ts";
import {
  type ExampleApp,
  json,
  parseJson,
  sendError,
  type Session,
  type SessionSocket,
} from "./app.ts";

/** Options of {@linkcode ChatApp}. */
export interface ChatOptions {
  /** Messages of a room sent to whoever joins it. @default {50} */
  historySize?: number;
  /** Rooms kept at most (with their history); joining one more is refused. @default {1000} */
  maxRooms?: number;
  /** Rooms one connection may be in at once. @default {10} */
  maxRoomsPerConnection?: number;
  /** Longest message text, in characters. @default {2000} */
  maxTextLength?: number;
  /** How long a token stays valid, in ms. @default {86400000} */
  tokenTtl?: number;
}

/** A line of chat as the server sends it and keeps it in history. */
export interface ChatLine {
  type: "message";
  room: string;
  /** Per-room sequence number, from 1. */
  id: number;
  nick: string;
  text: string;
  /** Milliseconds since the epoch. */
  time: number;
}

const NICK = /^[\p{L}\p{N}_-]{1,24}$/u;
const ROOM = /^[a-z0-9_-]{1,32}$/;
const MAX_TOKENS = 100_000;

interface Room {
  history: ChatLine[];
  nextId: number;
  members: number;
}

/** The chat app; see the module documentation. */
export class ChatApp implements ExampleApp {
  readonly name = "chat";
  readonly path = "/chat";
  readonly page = "chat.html";
  readonly description = "Chat: rooms, nicknames, history on join, auth in the handshake";

  readonly #historySize: number;
  readonly #maxRooms: number;
  readonly #maxRoomsPerConnection: number;
  readonly #maxTextLength: number;
  readonly #tokenTtl: number;
  readonly #tokens = new Map<string, { nick: string; expires: number }>();
  readonly #rooms = new Map<string, Room>();
  #server: Server | null = null;

  constructor(options: ChatOptions = {}) {
    this.#historySize = options.historySize ?? 50;
    this.#maxRooms = options.maxRooms ?? 1000;
    this.#maxRoomsPerConnection = options.maxRoomsPerConnection ?? 10;
    this.#maxTextLength = options.maxTextLength ?? 2000;
    this.#tokenTtl = options.tokenTtl ?? 24 * 60 * 60 * 1000;
  }

  attach(server: Server): void {
    this.#server = server;
  }

  stop(): void {
    this.#server = null;
  }

  /** A new token for `nick` (what `GET /api/chat/token` answers); throws `RangeError` for a bad nickname. */
  issueToken(nick: string): string {
    if (!NICK.test(nick)) {
      throw new RangeError("A nickname is 1-24 letters, digits, '_' or '-'");
    }
    const now = Date.now();
    if (this.#tokens.size >= MAX_TOKENS) {
      for (const [token, entry] of this.#tokens) {
        if (entry.expires <= now) this.#tokens.delete(token);
      }
      // Still full: forget the oldest (Map order is insertion order).
      if (this.#tokens.size >= MAX_TOKENS) {
        this.#tokens.delete(this.#tokens.keys().next().value!);
      }
    }
    const bytes = crypto.getRandomValues(new Uint8Array(18));
    const token = btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_");
    this.#tokens.set(token, { nick, expires: now + this.#tokenTtl });
    return token;
  }

  fetch(request: Request, url: URL): Response | null {
    if (url.pathname !== "/api/chat/token") return null;
    if (request.method !== "GET" && request.method !== "POST") {
      return json({ error: "Use GET /api/chat/token?nick=NAME" }, 405);
    }
    try {
      return json({ token: this.issueToken(url.searchParams.get("nick") ?? "") });
    } catch (err) {
      return json({ error: (err as Error).message }, 400);
    }
  }

  upgrade(request: UpgradeRequestInfo): Session {
    const token = request.url.searchParams.get("token") ?? "";
    const entry = this.#tokens.get(token);
    if (entry === undefined || entry.expires <= Date.now()) {
      throw new HandshakeError(401, "Missing, unknown or expired chat token");
    }
    return new ChatSession(this, entry.nick, request.url.searchParams.get("room"));
  }

  /** The last messages of `room` (oldest first). */
  history(room: string): readonly ChatLine[] {
    return this.#rooms.get(room)?.history ?? [];
  }

  /** @internal */
  join(ws: SessionSocket, session: ChatSession, room: string): void {
    if (!ROOM.test(room)) {
      return sendError(ws, "A room name is 1-32 characters: a-z, 0-9, '_' or '-'");
    }
    if (session.rooms.has(room)) return sendError(ws, `Already in room ${room}`);
    if (session.rooms.size >= this.#maxRoomsPerConnection) {
      return sendError(ws, `At most ${this.#maxRoomsPerConnection} rooms at once`);
    }
    let state = this.#rooms.get(room);
    if (state === undefined) {
      if (!this.#dropEmptyRoom()) return sendError(ws, "Too many rooms: try an existing one");
      state = { history: [], nextId: 1, members: 0 };
      this.#rooms.set(room, state);
    }
    state.members++;
    session.rooms.add(room);
    // History first, straight to this connection; the subscription makes
    // every later line follow it, in order.
    ws.send(JSON.stringify({ type: "history", room, messages: state.history }));
    ws.subscribe(topicOf(room), { policy: "close" });
    this.#publish(room, { type: "join", room, nick: session.nick, members: state.members });
  }

  /** @internal */
  leave(ws: SessionSocket | null, session: ChatSession, room: string): void {
    if (!session.rooms.delete(room)) {
      if (ws !== null) sendError(ws, `Not in room ${room}`);
      return;
    }
    ws?.unsubscribe(topicOf(room));
    const state = this.#rooms.get(room);
    if (state !== undefined) state.members--;
    this.#publish(room, { type: "leave", room, nick: session.nick, members: state?.members ?? 0 });
  }

  /** @internal */
  say(ws: SessionSocket, session: ChatSession, room: string, text: string): void {
    const state = this.#rooms.get(room);
    if (state === undefined || !session.rooms.has(room)) {
      return sendError(ws, `Join room ${room} first`);
    }
    if (text.length === 0 || text.length > this.#maxTextLength) {
      return sendError(ws, `A message is 1-${this.#maxTextLength} characters`);
    }
    const line: ChatLine = {
      type: "message",
      room,
      id: state.nextId++,
      nick: session.nick,
      text,
      time: Date.now(),
    };
    state.history.push(line);
    if (state.history.length > this.#historySize) state.history.shift();
    this.#publish(room, line);
  }

  /** @internal */
  typing(ws: SessionSocket, session: ChatSession, room: string): void {
    if (!session.rooms.has(room)) return sendError(ws, `Join room ${room} first`);
    // Everyone in the room but the typist.
    ws.publish(topicOf(room), JSON.stringify({ type: "typing", room, nick: session.nick }));
  }

  #publish(room: string, message: object): void {
    this.#server?.publish(topicOf(room), JSON.stringify(message));
  }

  /** Makes room for one more room by forgetting an empty one; false if every room has members. */
  #dropEmptyRoom(): boolean {
    if (this.#rooms.size < this.#maxRooms) return true;
    for (const [name, state] of this.#rooms) {
      if (state.members === 0) {
        this.#rooms.delete(name);
        return true;
      }
    }
    return false;
  }
}

function topicOf(room: string): string {
  return `chat:${room}`;
}

/** One chat connection: its nickname and rooms. */
class ChatSession implements Session {
  readonly rooms = new Set<string>();
  readonly nick: string;
  readonly #app: ChatApp;
  readonly #firstRoom: string | null;

  constructor(app: ChatApp, nick: string, firstRoom: string | null) {
    this.#app = app;
    this.nick = nick;
    this.#firstRoom = firstRoom;
  }

  open(ws: SessionSocket): void {
    ws.send(JSON.stringify({ type: "welcome", nick: this.nick }));
    if (this.#firstRoom !== null) this.#app.join(ws, this, this.#firstRoom);
  }

  message(ws: SessionSocket, data: Message): void {
    const msg = parseJson(data);
    const room = typeof msg?.room === "string" ? msg.room : null;
    if (msg === null || room === null) {
      return sendError(ws, 'Send JSON like {"type":"say","room":"lobby","text":"hi"}');
    }
    switch (msg.type) {
      case "join":
        return this.#app.join(ws, this, room);
      case "leave":
        return this.#app.leave(ws, this, room);
      case "say":
        return this.#app.say(ws, this, room, typeof msg.text === "string" ? msg.text : "");
      case "typing":
        return this.#app.typing(ws, this, room);
      default:
        return sendError(ws, `Unknown message type ${JSON.stringify(msg.type)}`);
    }
  }

  close(_ws: SessionSocket): void {
    for (const room of [...this.rooms]) this.#app.leave(null, this, room);
  }
}
