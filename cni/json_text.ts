// Lossless reading and editing of JSON text. CNI config files belong to the node's network
// plugin: re-serializing them would reorder integer-like keys, reformat numbers (1.0 -> 1),
// drop duplicate keys and change every byte of layout. Editing by span keeps every byte we do
// not mean to change, so removing our edit gives back the file exactly as it was.
//
// Every function here expects text that JSON.parse has already accepted.

/** Half-open range [start, end) of UTF-16 code units in the text. */
export interface Span {
  start: number;
  end: number;
}

export interface MemberSpan {
  key: string;
  /** From the opening quote of the key to the end of the value. */
  span: Span;
  value: Span;
}

const WS = new Set([" ", "\t", "\n", "\r"]);

export function skipWhitespace(text: string, pos: number): number {
  while (pos < text.length && WS.has(text[pos]!)) pos++;
  return pos;
}

function stringEnd(text: string, pos: number): number {
  // pos is at the opening quote.
  let i = pos + 1;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\") i += 2;
    else if (c === '"') return i + 1;
    else i++;
  }
  throw new SyntaxError(`unterminated string at offset ${pos}`);
}

/** The span of the value starting at (or after whitespace following) `pos`. */
export function valueSpan(text: string, pos: number): Span {
  const start = skipWhitespace(text, pos);
  const c = text[start];
  if (c === '"') return { start, end: stringEnd(text, start) };
  if (c === "{" || c === "[") {
    let depth = 0;
    let i = start;
    while (i < text.length) {
      const ch = text[i]!;
      if (ch === '"') {
        i = stringEnd(text, i);
        continue;
      }
      if (ch === "{" || ch === "[") depth++;
      else if (ch === "}" || ch === "]") {
        depth--;
        if (depth === 0) return { start, end: i + 1 };
      }
      i++;
    }
    throw new SyntaxError(`unterminated ${c === "{" ? "object" : "array"} at offset ${start}`);
  }
  let i = start;
  while (i < text.length && !WS.has(text[i]!) && !",]}:".includes(text[i]!)) i++;
  if (i === start) throw new SyntaxError(`expected a value at offset ${start}`);
  return { start, end: i };
}

/** The members of the object whose span is given, in text order. */
export function objectMembers(text: string, obj: Span): MemberSpan[] {
  if (text[obj.start] !== "{") throw new SyntaxError(`expected an object at offset ${obj.start}`);
  const out: MemberSpan[] = [];
  let i = skipWhitespace(text, obj.start + 1);
  if (text[i] === "}") return out;
  for (;;) {
    const keyStart = i;
    const keyEnd = stringEnd(text, keyStart);
    const key = JSON.parse(text.slice(keyStart, keyEnd)) as string;
    i = skipWhitespace(text, keyEnd);
    if (text[i] !== ":") throw new SyntaxError(`expected ':' at offset ${i}`);
    const value = valueSpan(text, i + 1);
    out.push({ key, span: { start: keyStart, end: value.end }, value });
    i = skipWhitespace(text, value.end);
    if (text[i] === "}") return out;
    if (text[i] !== ",") throw new SyntaxError(`expected ',' or '}' at offset ${i}`);
    i = skipWhitespace(text, i + 1);
  }
}

/** The element spans of the array whose span is given, in order. */
export function arrayElements(text: string, arr: Span): Span[] {
  if (text[arr.start] !== "[") throw new SyntaxError(`expected an array at offset ${arr.start}`);
  const out: Span[] = [];
  let i = skipWhitespace(text, arr.start + 1);
  if (text[i] === "]") return out;
  for (;;) {
    const el = valueSpan(text, i);
    out.push(el);
    i = skipWhitespace(text, el.end);
    if (text[i] === "]") return out;
    if (text[i] !== ",") throw new SyntaxError(`expected ',' or ']' at offset ${i}`);
    i = i + 1;
  }
}

/** The span of the whole document's top-level value. */
export function documentSpan(text: string): Span {
  return valueSpan(text, 0);
}

/**
 * Re-lays out JSON text with the given indentation while copying every string, number and
 * literal token verbatim, so no value is reinterpreted. Nested lines start with `baseIndent`.
 */
export function prettyJson(text: string, indentUnit = "  ", baseIndent = ""): string {
  let out = "";
  let depth = 0;
  let i = skipWhitespace(text, 0);
  const newline = (d: number) => "\n" + baseIndent + indentUnit.repeat(d);
  while (i < text.length) {
    const c = text[i]!;
    if (c === "{" || c === "[") {
      const close = c === "{" ? "}" : "]";
      const next = skipWhitespace(text, i + 1);
      if (text[next] === close) {
        out += c + close;
        i = next + 1;
      } else {
        depth++;
        out += c + newline(depth);
        i = next;
      }
    } else if (c === "}" || c === "]") {
      depth--;
      out += newline(depth) + c;
      i++;
    } else if (c === ",") {
      out += "," + newline(depth);
      i++;
    } else if (c === ":") {
      out += ": ";
      i++;
    } else {
      const tok = valueSpan(text, i);
      out += text.slice(tok.start, tok.end);
      i = tok.end;
    }
    i = skipWhitespace(text, i);
  }
  return out;
}
