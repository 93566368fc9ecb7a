/**
 * Throwaway TLS material for the `wss://` tests, made at test time with the
 * `openssl` CLI in a fresh temporary directory: a CA, and a server certificate
 * it signed for `localhost`, `127.0.0.1` and `::1`. Nothing secret is
 * committed, and the keys live only as long as the test run.
 *
 * EC P-256 keys, one-day validity, and the extensions rustls and BoringSSL
 * insist on (SAN, CA:FALSE, serverAuth). Shared by every suite that needs TLS
 * (`tests/runtime/transport_test.ts`, `tests/integration/tls_test.ts`,
 * `tests/integration/client_bad_peers_test.ts`).
 *
 * @module
 */

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";

/** A CA and a server certificate signed by it, as PEM strings and files. */
export interface TestCerts {
  /** The temporary directory holding the files; removed by `cleanup()`. */
  readonly dir: string;
  /** The CA certificate (PEM): what a client must trust. */
  readonly ca: string;
  /** The server certificate (PEM), for localhost, 127.0.0.1 and ::1. */
  readonly cert: string;
  /** The server's private key (PEM). */
  readonly key: string;
  /** Paths of the same three, for the file forms (`certFile`, `--ca`, `DENO_CERT`, ...). */
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
  /** Deletes the directory. Idempotent. */
  cleanup(): void;
}

/** Whether the `openssl` CLI runs here. */
export function hasOpenssl(): boolean {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore", timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

/**
 * `null` if openssl is available; otherwise fails under `CI` (which must have
 * it) or warns loudly and returns a skip reason. `what` names the tests
 * skipped, for the warning.
 */
export function opensslSkipReason(what = "the wss:// tests"): string | null {
  if (hasOpenssl()) return null;
  const message = `openssl CLI not found: SKIPPING ${what}. Install openssl to run them.`;
  if (process.env.CI) throw new Error(`${message} CI must provide it.`);
  console.warn(`\n!!! ${message} !!!\n`);
  return "no openssl CLI";
}

/**
 * Creates a fresh CA and a server certificate signed by it. `name` labels the
 * CA's subject so that two sets made in one run are told apart.
 */
export function makeTestCerts(name = "Sluice test CA"): TestCerts {
  const dir = mkdtempSync(join(tmpdir(), "sluice-certs-"));
  try {
    const run = (...args: string[]) =>
      execFileSync("openssl", args, {
        cwd: dir,
        stdio: ["ignore", "ignore", "pipe"],
        timeout: 20_000,
      });
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(
      "req",
      "-x509",
      ...ec,
      "-keyout",
      "ca.key",
      "-out",
      "ca.crt",
      "-days",
      "1",
      "-subj",
      `/CN=${name}`,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    );
    run("req", ...ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost");
    writeFileSync(
      join(dir, "server.ext"),
      [
        "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature",
        "extendedKeyUsage=serverAuth",
      ].join("\n"),
    );
    run(
      "x509",
      "-req",
      "-in",
      "server.csr",
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-set_serial",
      String(Date.now()),
      "-days",
      "1",
      "-extfile",
      "server.ext",
      "-out",
      "server.crt",
    );
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  const caFile = join(dir, "ca.crt");
  const certFile = join(dir, "server.crt");
  const keyFile = join(dir, "server.key");
  return {
    dir,
    ca: readFileSync(caFile, "utf8"),
    cert: readFileSync(certFile, "utf8"),
    key: readFileSync(keyFile, "utf8"),
    caFile,
    certFile,
    keyFile,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
