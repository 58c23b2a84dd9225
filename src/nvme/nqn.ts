/**
 * NVMe Qualified Names (NVMe Base 2.0, "NVMe Qualified Names"): at most
 * 223 bytes of UTF-8, either `nqn.yyyy-mm.<reverse domain>:<unique name>`
 * (the date a naming authority owned the domain) or
 * `nqn.2014-08.org.nvmexpress:uuid:<RFC 4122 UUID>`. The discovery NQN
 * `nqn.2014-08.org.nvmexpress.discovery` is the one name without a colon.
 * @module
 */
import { NVME_DISCOVERY_NQN } from "./fabrics.ts";

/** Longest NQN in bytes (UTF-8, without the terminating NUL). */
export const NVME_NQN_MAX_BYTES = 223;
/** Prefix of NQNs built from a UUID. */
export const NVME_NQN_UUID_PREFIX = "nqn.2014-08.org.nvmexpress:uuid:";

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const DATE_RE = /^nqn\.(\d{4})-(\d{2})\./;
const LABEL_RE = /^[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/**
 * Why `nqn` is not a valid NQN, or null when it is. Checks the length in
 * bytes, the UUID form, the date code, the reverse domain (labels start
 * with a letter, hold letters, digits and hyphens, end with a letter or
 * digit, at most 63 characters) and a non-empty name after the colon.
 */
export function nqnProblem(nqn: string): string | null {
  const bytes = new TextEncoder().encode(nqn).byteLength;
  if (bytes > NVME_NQN_MAX_BYTES) return `longer than ${NVME_NQN_MAX_BYTES} bytes (${bytes})`;
  if (nqn === NVME_DISCOVERY_NQN) return null;
  if (nqn.startsWith(NVME_NQN_UUID_PREFIX)) {
    return UUID_RE.test(nqn.slice(NVME_NQN_UUID_PREFIX.length))
      ? null
      : `the part after "${NVME_NQN_UUID_PREFIX}" must be a UUID`;
  }
  const date = DATE_RE.exec(nqn);
  if (date === null) return 'must start with "nqn.yyyy-mm."';
  const month = Number(date[2]);
  if (month < 1 || month > 12) return `month ${date[2]} in the date code is not 01-12`;
  const rest = nqn.slice(date[0].length);
  const colon = rest.indexOf(":");
  if (colon < 0) return 'must have ":" and a name after the reverse domain';
  if (colon === rest.length - 1) return 'must have a name after ":"';
  const domain = rest.slice(0, colon);
  if (domain.length === 0) return "must have a reverse domain name after the date";
  for (const label of domain.split(".")) {
    if (!LABEL_RE.test(label)) {
      return `reverse domain label "${label}" must start with a letter, hold letters, digits ` +
        "and hyphens, end with a letter or digit, and be at most 63 characters";
    }
  }
  for (let i = 0; i < nqn.length; i++) {
    if (nqn.charCodeAt(i) < 0x20) return "must not contain control characters";
  }
  return null;
}

/** Is `nqn` a valid NQN? */
export function isValidNqn(nqn: string): boolean {
  return nqnProblem(nqn) === null;
}
