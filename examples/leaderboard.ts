/**
 * Leaderboard: players post scores over the socket; every connection sees
 * the live top 10, pushed only when it changes; `GET /api/top` answers the
 * same list as JSON on the same port.
 *
 * - A player's entry is their best score. A new score can only change the
 *   top 10 if it enters it, so each post costs a comparison with the 10th
 *   score, and a sort of 11 entries when it does enter.
 * - The top 10 is one topic (`leaderboard:top`) with the `"latest"` policy:
 *   a viewer that falls behind gets only the newest list, never a backlog.
 *
 * Client → server (JSON text): `{type:"score",name,score}`.
 * Server → client: `{type:"top",version,entries:[{rank,name,score}]}` on
 * open and on every change, `{type:"ack",name,best,rank}` to the poster
 * (`rank` is `null` outside the top 10), `error`.
 *
 * @module
 */

import type { Message, Server, UpgradeRequestInfo } from "../mod.ts";
import {
  type ExampleApp,
  json,
  parseJson,
  sendError,
  type Session,
  type SessionSocket,
} from "./app.ts";

/** Options of {@linkcode LeaderboardApp}. */
export interface LeaderboardOptions {
  /** Entries in the live list. @default {10} */
  size?: number;
  /** Players remembered at most; a new player beyond it is refused. @default {100000} */
  maxPlayers?: number;
}

/** One row of the top list. */
export interface TopEntry {
  rank: number;
  name: string;
  score: number;
}

const TOPIC = "leaderboard:top";
const NAME = /^[\p{L}\p{N} _-]{1,24}$/u;

/** The leaderboard app; see the module documentation. */
export class LeaderboardApp implements ExampleApp {
  readonly name = "leaderboard";
  readonly path = "/leaderboard";
  readonly page = "leaderboard.html";
  readonly description = "Leaderboard: scores over the socket, live top 10, GET /api/top";

  readonly #size: number;
  readonly #maxPlayers: number;
  readonly #best = new Map<string, number>();
  #top: { name: string; score: number }[] = [];
  #version = 0;
  #message = JSON.stringify({ type: "top", version: 0, entries: [] });
  #server: Server | null = null;

  constructor(options: LeaderboardOptions = {}) {
    this.#size = options.size ?? 10;
    this.#maxPlayers = options.maxPlayers ?? 100_000;
  }

  attach(server: Server): void {
    this.#server = server;
  }

  stop(): void {
    this.#server = null;
  }

  /** The current top list. */
  get top(): { version: number; entries: TopEntry[] } {
    return { version: this.#version, entries: this.#entries() };
  }

  /**
   * Records `score` for `name` and pushes the top list if it changed;
   * returns the player's best and rank (`null` outside the list), or an
   * error message.
   */
  post(name: string, score: number): { best: number; rank: number | null } | string {
    if (!NAME.test(name)) return "A name is 1-24 letters, digits, spaces, '_' or '-'";
    if (!Number.isSafeInteger(score) || score < 0) return "A score is a whole number >= 0";
    const previous = this.#best.get(name);
    if (previous === undefined && this.#best.size >= this.#maxPlayers) {
      return "The leaderboard is full";
    }
    if (previous === undefined || score > previous) {
      this.#best.set(name, score);
      this.#update(name, score);
    }
    const best = this.#best.get(name)!;
    const index = this.#top.findIndex((entry) => entry.name === name);
    return { best, rank: index === -1 ? null : index + 1 };
  }

  /** Updates the list for a player's new best; publishes only if the list changed. */
  #update(name: string, score: number): void {
    const last = this.#top[this.#top.length - 1];
    const full = this.#top.length >= this.#size;
    const inList = this.#top.some((entry) => entry.name === name);
    // Ties keep the earlier holder ahead: a new score must beat the 10th.
    if (!inList && full && score <= last.score) return;
    const next = this.#top.filter((entry) => entry.name !== name);
    next.push({ name, score });
    next.sort((a, b) => b.score - a.score);
    if (next.length > this.#size) next.length = this.#size;
    this.#top = next;
    this.#version++;
    this.#message = JSON.stringify({
      type: "top",
      version: this.#version,
      entries: this.#entries(),
    });
    this.#server?.publish(TOPIC, this.#message);
  }

  #entries(): TopEntry[] {
    return this.#top.map((entry, i) => ({ rank: i + 1, name: entry.name, score: entry.score }));
  }

  fetch(request: Request, url: URL): Response | null {
    if (url.pathname !== "/api/top") return null;
    if (request.method !== "GET" && request.method !== "HEAD") {
      return json({ error: "Use GET /api/top" }, 405);
    }
    return json(this.top);
  }

  upgrade(_request: UpgradeRequestInfo): Session {
    return new LeaderboardSession(this);
  }

  /** @internal */
  welcome(ws: SessionSocket): void {
    ws.subscribe(TOPIC, { policy: "latest" });
    ws.send(this.#message);
  }
}

/** One leaderboard connection (a viewer, a player, or both). */
class LeaderboardSession implements Session {
  readonly #app: LeaderboardApp;

  constructor(app: LeaderboardApp) {
    this.#app = app;
  }

  open(ws: SessionSocket): void {
    this.#app.welcome(ws);
  }

  message(ws: SessionSocket, data: Message): void {
    const msg = parseJson(data);
    if (msg?.type !== "score" || typeof msg.name !== "string" || typeof msg.score !== "number") {
      return sendError(ws, 'Send {"type":"score","name":"ada","score":120}');
    }
    const result = this.#app.post(msg.name, msg.score);
    if (typeof result === "string") return sendError(ws, result);
    ws.send(JSON.stringify({ type: "ack", name: msg.name, ...result }));
  }

  close(): void {}
}
