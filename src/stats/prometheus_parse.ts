/**
 * A strict parser of the Prometheus text exposition format (version
 * 0.0.4), written from the format's documentation, so tests can check that
 * `/metrics` is well-formed rather than grep it. It rejects: bad metric or
 * label names, bad escapes, unparseable values, a TYPE or HELP given twice
 * or TYPE after the family's samples, families interleaved with others,
 * and the same series twice.
 * @module
 */

/** One sample line. */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
  timestampMs?: number;
}

/** One metric family: its samples and what HELP and TYPE said. */
export interface PromFamily {
  name: string;
  type: "counter" | "gauge" | "histogram" | "summary" | "untyped";
  help?: string;
  samples: PromSample[];
}

/** A line that breaks the format; `line` is 1-based. */
export class PromParseError extends Error {
  constructor(readonly line: number, message: string) {
    super(`line ${line}: ${message}`);
    this.name = "PromParseError";
  }
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

/** The family a sample name belongs to (histogram and summary suffixes). */
function familyOf(name: string, families: Map<string, PromFamily>): string {
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, -suffix.length);
      const f = families.get(base);
      if (f !== undefined && (f.type === "histogram" || f.type === "summary")) return base;
    }
  }
  return name;
}

function parseValue(s: string, line: number): number {
  if (s === "NaN") return NaN;
  if (s === "+Inf" || s === "Inf") return Infinity;
  if (s === "-Inf") return -Infinity;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(s)) {
    throw new PromParseError(line, `bad value "${s}"`);
  }
  return Number(s);
}

function unescapeHelp(s: string): string {
  return s.replace(/\\(\\|n)/g, (_, c: string) => (c === "n" ? "\n" : "\\"));
}

/** Parses an exposition; throws PromParseError at the first violation. */
export function parsePrometheusText(text: string): Map<string, PromFamily> {
  const families = new Map<string, PromFamily>();
  const closed = new Set<string>();
  const seen = new Set<string>();
  const typed = new Set<string>();
  let current: string | null = null;
  const lines = text.split("\n");
  if (text.length > 0 && !text.endsWith("\n")) {
    throw new PromParseError(lines.length, "the last line must end with a line feed");
  }
  const family = (name: string, lineNo: number): PromFamily => {
    if (current !== name) {
      if (closed.has(name)) {
        throw new PromParseError(lineNo, `family ${name} continues after another family`);
      }
      if (current !== null) closed.add(current);
      current = name;
    }
    let f = families.get(name);
    if (f === undefined) families.set(name, f = { name, type: "untyped", samples: [] });
    return f;
  };
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const line = lines[i] as string;
    if (line.trim() === "") continue;
    if (line.startsWith("#")) {
      const m = /^#[ \t]+(HELP|TYPE)[ \t]+(\S+)(?:[ \t]+(.*))?$/.exec(line);
      if (m === null) continue; // an ordinary comment
      const [, kw, name = "", rest = ""] = m;
      if (METRIC_NAME.exec(name)?.[0] !== name) {
        throw new PromParseError(lineNo, `bad metric name "${name}"`);
      }
      const f = family(name, lineNo);
      if (kw === "HELP") {
        if (f.help !== undefined) throw new PromParseError(lineNo, `second HELP for ${name}`);
        f.help = unescapeHelp(rest);
      } else {
        if (!TYPES.has(rest)) throw new PromParseError(lineNo, `bad type "${rest}"`);
        if (f.samples.length > 0) {
          throw new PromParseError(lineNo, `TYPE of ${name} after its samples`);
        }
        if (typed.has(name)) throw new PromParseError(lineNo, `second TYPE for ${name}`);
        typed.add(name);
        f.type = rest as PromFamily["type"];
      }
      continue;
    }
    let pos = 0;
    const nm = METRIC_NAME.exec(line);
    if (nm === null) throw new PromParseError(lineNo, "a sample must start with a metric name");
    const name = nm[0];
    pos = name.length;
    const labels: Record<string, string> = {};
    if (line[pos] === "{") {
      pos++;
      while (true) {
        while (line[pos] === " " || line[pos] === "\t") pos++;
        if (line[pos] === "}") {
          pos++;
          break;
        }
        const ln = LABEL_NAME.exec(line.slice(pos));
        if (ln === null) throw new PromParseError(lineNo, `bad label name at column ${pos + 1}`);
        const label = ln[0];
        pos += label.length;
        if (line[pos] !== "=" || line[pos + 1] !== '"') {
          throw new PromParseError(lineNo, `label ${label} must be followed by ="`);
        }
        pos += 2;
        let v = "";
        while (true) {
          const c = line[pos];
          if (c === undefined) throw new PromParseError(lineNo, "unterminated label value");
          pos++;
          if (c === '"') break;
          if (c === "\\") {
            const e = line[pos++];
            if (e === "\\") v += "\\";
            else if (e === '"') v += '"';
            else if (e === "n") v += "\n";
            else throw new PromParseError(lineNo, `bad escape \\${e ?? ""} in a label value`);
          } else v += c;
        }
        if (label in labels) throw new PromParseError(lineNo, `label ${label} given twice`);
        labels[label] = v;
        while (line[pos] === " " || line[pos] === "\t") pos++;
        if (line[pos] === ",") pos++;
        else if (line[pos] !== "}") {
          throw new PromParseError(lineNo, "expected , or } after a label");
        }
      }
    }
    const rest = line.slice(pos);
    const parts = rest.trim().split(/[ \t]+/);
    if (!/^[ \t]/.test(rest) || parts.length < 1 || parts.length > 2 || parts[0] === "") {
      throw new PromParseError(lineNo, "a sample needs a value (and an optional timestamp)");
    }
    const value = parseValue(parts[0] as string, lineNo);
    let timestampMs: number | undefined;
    if (parts[1] !== undefined) {
      if (!/^-?\d+$/.test(parts[1])) throw new PromParseError(lineNo, "bad timestamp");
      timestampMs = Number(parts[1]);
    }
    const f = family(familyOf(name, families), lineNo);
    const key = name + JSON.stringify(Object.entries(labels).sort());
    if (seen.has(key)) throw new PromParseError(lineNo, `series ${name} given twice`);
    seen.add(key);
    if (f.type === "counter" && !(value >= 0)) {
      throw new PromParseError(lineNo, `counter ${name} is negative or NaN`);
    }
    f.samples.push({ name, labels, value, ...(timestampMs === undefined ? {} : { timestampMs }) });
  }
  return families;
}
