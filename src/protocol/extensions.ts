/**
 * Parsing and serializing `Sec-WebSocket-Extensions` header values
 * (RFC 6455 §9.1).
 *
 * ```
 * Sec-WebSocket-Extensions = extension-list
 * extension-list = 1#extension
 * extension = extension-token *( ";" extension-param )
 * extension-param = token [ "=" (token | quoted-string) ]
 *     ;When using the quoted-string syntax variant, the value
 *     ;after quoted-string unescaping MUST conform to the
 *     ;'token' ABNF.
 * ```
 *
 * The parser is strict: RFC 6455 §9.1 says a recipient of a value that does not
 * conform to this ABNF "MUST immediately _Fail the WebSocket Connection_", so
 * every deviation throws a {@linkcode SyntaxError} naming the offset. It is
 * lenient only where HTTP itself asks to be: optional whitespace around `,`,
 * `;` and `=` (the "implied *LWS rule" of RFC 2616) and empty list elements
 * (`a, , b`), which RFC 7230 §7 says a recipient MUST accept.
 *
 * Names are kept exactly as received; RFC 7692 and the IANA registry spell
 * extension and parameter names in lower case, and peers send them that way.
 *
 * @module
 */

/** One `name[=value]` parameter of an extension. */
export interface ExtensionParam {
  /** Parameter name (a token). */
  readonly name: string;
  /**
   * Parameter value, unquoted; `null` when the parameter has no `=value`
   * (as in `server_no_context_takeover`).
   */
  readonly value: string | null;
}

/** One element of an extension list: a name and its parameters, in order. */
export interface Extension {
  /** Extension name (a token), e.g. `permessage-deflate`. */
  readonly name: string;
  /** Parameters in the order received; duplicates are kept so callers can reject them. */
  readonly params: readonly ExtensionParam[];
}

// RFC 7230 §3.2.6 tchar, as a lookup table over ASCII.
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  TCHAR[c.charCodeAt(0)] = 1;
}

function isTchar(code: number): boolean {
  return code < 128 && TCHAR[code] === 1;
}

/**
 * Whether `value` is an RFC 7230 token (one or more `tchar`).
 *
 * @example Check a candidate extension name
 * ```ts
 * import { isToken } from "./extensions.ts";
 *
 * isToken("permessage-deflate"); // true
 * isToken("two words"); // false
 * ```
 */
export function isToken(value: string): boolean {
  if (value.length === 0) return false;
  for (let i = 0; i < value.length; i++) {
    if (!isTchar(value.charCodeAt(i))) return false;
  }
  return true;
}

const SP = 0x20;
const HTAB = 0x09;
const COMMA = 0x2c;
const SEMICOLON = 0x3b;
const EQUALS = 0x3d;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;

/** Cursor over one header value; every method throws SyntaxError on bad input. */
class Scanner {
  readonly #text: string;
  #pos = 0;

  constructor(text: string) {
    this.#text = text;
  }

  get done(): boolean {
    return this.#pos >= this.#text.length;
  }

  peek(): number {
    return this.#pos < this.#text.length ? this.#text.charCodeAt(this.#pos) : -1;
  }

  skip(): void {
    this.#pos++;
  }

  skipOws(): void {
    let c = this.peek();
    while (c === SP || c === HTAB) {
      this.#pos++;
      c = this.peek();
    }
  }

  token(what: string): string {
    const start = this.#pos;
    while (isTchar(this.peek())) this.#pos++;
    if (this.#pos === start) throw this.error(`expected ${what}`);
    return this.#text.slice(start, this.#pos);
  }

  /** quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE, unescaped. */
  quotedString(): string {
    const open = this.#pos;
    this.#pos++; // opening DQUOTE
    let out = "";
    for (;;) {
      const c = this.peek();
      if (c === -1) {
        this.#pos = open;
        throw this.error("unterminated quoted-string");
      }
      if (c === DQUOTE) {
        this.#pos++;
        return out;
      }
      if (c === BACKSLASH) {
        this.#pos++;
        const escaped = this.peek();
        if (!isQuotedPairChar(escaped)) throw this.error("invalid escape in quoted-string");
        out += this.#text[this.#pos++];
        continue;
      }
      if (!isQdtext(c)) throw this.error("invalid character in quoted-string");
      out += this.#text[this.#pos++];
    }
  }

  error(reason: string): SyntaxError {
    const at = this.#pos;
    const found = at < this.#text.length ? `${JSON.stringify(this.#text[at])}` : "end of value";
    return new SyntaxError(
      `Invalid Sec-WebSocket-Extensions header: ${reason} at offset ${at} ` +
        `(found ${found}) in ${JSON.stringify(this.#text)}`,
    );
  }
}

// qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text (obs-text excluded:
// the unescaped value must be a token, which is ASCII anyway).
function isQdtext(c: number): boolean {
  return c === HTAB || c === SP || c === 0x21 || (c >= 0x23 && c <= 0x5b) ||
    (c >= 0x5d && c <= 0x7e);
}

function isQuotedPairChar(c: number): boolean {
  return c === HTAB || (c >= 0x20 && c <= 0x7e);
}

/**
 * Parses a `Sec-WebSocket-Extensions` header value into its extensions, in
 * order. Several header lines may be passed as an array; they are treated as
 * one list joined with commas (RFC 7230 §3.2.2).
 *
 * Throws a {@linkcode SyntaxError} for anything that does not match the
 * RFC 6455 §9.1 grammar, including a quoted value that does not unescape to a
 * token, and for a list with no extension at all (`1#extension` needs one;
 * an absent header is the caller's "no extensions", not an empty string).
 *
 * @example Parse a client offer
 * ```ts
 * import { parseExtensions } from "./extensions.ts";
 *
 * const offers = parseExtensions(
 *   'permessage-deflate; client_max_window_bits, permessage-deflate; server_max_window_bits="10"',
 * );
 * // [
 * //   { name: "permessage-deflate", params: [{ name: "client_max_window_bits", value: null }] },
 * //   { name: "permessage-deflate", params: [{ name: "server_max_window_bits", value: "10" }] },
 * // ]
 * ```
 */
export function parseExtensions(header: string | readonly string[]): Extension[] {
  const text = typeof header === "string" ? header : header.join(", ");
  const s = new Scanner(text);
  const extensions: Extension[] = [];
  for (;;) {
    s.skipOws();
    if (s.done) break;
    if (s.peek() === COMMA) { // empty list element
      s.skip();
      continue;
    }
    const name = s.token("an extension name");
    const params: ExtensionParam[] = [];
    s.skipOws();
    while (s.peek() === SEMICOLON) {
      s.skip();
      s.skipOws();
      const paramName = s.token("a parameter name");
      s.skipOws();
      let value: string | null = null;
      if (s.peek() === EQUALS) {
        s.skip();
        s.skipOws();
        if (s.peek() === DQUOTE) {
          value = s.quotedString();
          if (!isToken(value)) {
            throw new SyntaxError(
              `Invalid Sec-WebSocket-Extensions header: the quoted value ${
                JSON.stringify(value)
              } ` +
                `of parameter ${JSON.stringify(paramName)} is not a token (RFC 6455 §9.1) in ` +
                JSON.stringify(text),
            );
          }
        } else {
          value = s.token("a parameter value");
        }
        s.skipOws();
      }
      params.push({ name: paramName, value });
    }
    extensions.push({ name, params });
    if (s.done) break;
    if (s.peek() !== COMMA) throw s.error('expected "," or ";"');
    s.skip();
  }
  if (extensions.length === 0) {
    throw new SyntaxError(
      `Invalid Sec-WebSocket-Extensions header: no extension in ${JSON.stringify(text)} ` +
        "(RFC 6455 §9.1 requires at least one)",
    );
  }
  return extensions;
}

/**
 * Serializes extensions into a `Sec-WebSocket-Extensions` header value, the
 * inverse of {@linkcode parseExtensions}: `name; param; param=value, name2`.
 *
 * Values are written as bare tokens (RFC 6455 §9.1 only allows values that
 * are tokens, so quoting never adds anything). Throws a {@linkcode TypeError}
 * when a name or value is not a token, because such a header would be
 * rejected by a strict peer.
 *
 * @example Build a server response
 * ```ts
 * import { serializeExtensions } from "./extensions.ts";
 *
 * serializeExtensions([{
 *   name: "permessage-deflate",
 *   params: [{ name: "server_no_context_takeover", value: null }, {
 *     name: "client_max_window_bits",
 *     value: "10",
 *   }],
 * }]);
 * // "permessage-deflate; server_no_context_takeover; client_max_window_bits=10"
 * ```
 */
export function serializeExtensions(extensions: readonly Extension[]): string {
  const parts: string[] = [];
  for (const ext of extensions) {
    if (!isToken(ext.name)) {
      throw new TypeError(`Invalid extension name ${JSON.stringify(ext.name)}: must be a token`);
    }
    let part = ext.name;
    for (const param of ext.params) {
      if (!isToken(param.name)) {
        throw new TypeError(
          `Invalid parameter name ${JSON.stringify(param.name)} for extension ` +
            `${JSON.stringify(ext.name)}: must be a token`,
        );
      }
      part += `; ${param.name}`;
      if (param.value !== null) {
        if (!isToken(param.value)) {
          throw new TypeError(
            `Invalid value ${JSON.stringify(param.value)} for parameter ` +
              `${JSON.stringify(param.name)}: must be a token (RFC 6455 §9.1)`,
          );
        }
        part += `=${param.value}`;
      }
    }
    parts.push(part);
  }
  return parts.join(", ");
}
