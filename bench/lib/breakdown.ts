/**
 * Where a server's CPU time goes per message: the samples of a CPU profile
 * sorted into the stages of Sluice's receive-echo path and multiplied by the
 * measured server CPU time per message.
 *
 * A sample belongs to the stage of the innermost frame that names one; a
 * native leaf that does I/O (`op_read`, `op_write`, Bun's socket `write`) is
 * runtime I/O whoever called it; other natives (`slice`, `set`) count for
 * the JavaScript that called them.
 *
 * @module
 */

/** The Chrome `.cpuprofile` format, as V8's inspector and Bun write it. */
export interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
    children?: number[];
  }[];
  samples: number[];
}

/** The stages, in the order a message goes through them. */
export const STAGES = [
  "parse",
  "deliver",
  "encode",
  "write",
  "driver",
  "runtime I/O",
  "GC",
  "other",
] as const;
export type Stage = typeof STAGES[number];

/** What each stage covers, for the README. */
export const STAGE_NOTES: Record<Stage, string> = {
  "parse": "frame headers, unmasking, copying the payload out, message assembly " +
    "(`frame.ts`, `message.ts`, `mask.ts`, `WebSocketProtocol.receive`)",
  "deliver": "handing the message to the application: the driver and the faces, " +
    "the guard, the echo callback itself",
  "encode": "`send()` down to the frame in the arena (`sendBinary`, `#queueFrame`, header, copy)",
  "write": "the driver's flush: taking the output, coalescing, the adapter's `write()` " +
    "(JavaScript only; the system call is runtime I/O)",
  "driver": "the driver's read step around the protocol: backpressure checks, state, keepalive",
  "runtime I/O": "socket reads and writes (system calls, loopback delivery), the runtime's " +
    "event loop and op/callback machinery, the adapter's read path",
  "GC": "garbage collection",
  "other": "everything else (timers, handshakes of the warm-up, unattributed)",
};

const IDLE = new Set(["(idle)", "(program)", "(root)"]);
/** Native leaves that are I/O whoever called them. */
const IO_LEAVES = new Set(["op_write", "op_read", "write", "read", "writev", "op_void_async"]);

function fileOf(url: string): string {
  return url.split("/").pop() ?? "";
}

/** The stage a JavaScript frame names, or null to look further out. */
function stageOf(name: string, file: string): Stage | null {
  switch (file) {
    case "frame.ts":
      return name === "writeFrameHeader" || name === "encodeFrame" ? "encode" : "parse";
    case "message.ts":
    case "utf8.ts":
      return "parse";
    case "mask.ts":
      return null; // masking serves both directions: the caller decides
    case "connection.ts":
      if (name === "receive" || name === "#onPing" || name === "#onClose") return "parse";
      if (name === "binary" || name === "text" || name === "ping" || name === "pong") {
        return "deliver";
      }
      return "encode";
    case "driver.ts":
      if (name === "#deliver") return "deliver";
      if (name === "send" || name === "writeFrame" || name === "#queued") return "encode";
      if (
        name === "#flush" || name === "#writeChunks" || name === "coalesce" ||
        name === "coalesceRuns" || name === "join" || name === "#flushed" ||
        name === "#flushPending" || name === "#scheduleFlush"
      ) return "write";
      return "driver";
    case "websocket.ts":
      return name === "send" ? "encode" : "deliver";
    case "sluice_echo.ts":
      return "deliver";
    case "deno.ts":
    case "bun.ts":
      return name === "write" || name === "#writeAll" ? "write" : "runtime I/O";
    default:
      // Deno's own JavaScript (ops, promises, the event loop tick).
      if (/^\d\d_[a-z_]+\.js$/.test(file) || file.startsWith("ext:")) return "runtime I/O";
      return null;
  }
}

/** Shares (0-1) of the busy samples per stage. */
export function stageShares(profile: CpuProfile): Record<Stage, number> {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) {
    for (const child of node.children ?? []) parent.set(child, node.id);
  }
  const memo = new Map<number, Stage | null>();
  const classify = (id: number): Stage | null => {
    if (memo.has(id)) return memo.get(id)!;
    const { functionName, url } = byId.get(id)!.callFrame;
    let stage: Stage | null;
    if (IDLE.has(functionName)) stage = null;
    else if (functionName === "(garbage collector)") stage = "GC";
    else if (url === "" && (IO_LEAVES.has(functionName) || functionName.startsWith("op_"))) {
      stage = "runtime I/O";
    } else {
      stage = stageOf(functionName, fileOf(url));
      if (stage === null) {
        const up = parent.get(id);
        stage = up === undefined ? "other" : classify(up) ?? "other";
      }
    }
    memo.set(id, stage);
    return stage;
  };
  const counts = Object.fromEntries(STAGES.map((s) => [s, 0])) as Record<Stage, number>;
  let busy = 0;
  for (const id of profile.samples) {
    if (IDLE.has(byId.get(id)!.callFrame.functionName)) continue;
    const stage = classify(id) ?? "other";
    counts[stage]++;
    busy++;
  }
  for (const stage of STAGES) counts[stage] /= Math.max(1, busy);
  return counts;
}
