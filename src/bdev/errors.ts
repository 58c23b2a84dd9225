/**
 * Errors of the bdev package. Each carries a negative errno-style `code`
 * that the RPC layer returns as the JSON-RPC error code, as SPDK does.
 * @module
 */

/** Base class: a bdev operation failed for an operating (not programming) reason. */
export class BdevError extends Error {
  /** Negative errno value, used as the JSON-RPC error code. */
  readonly code: number;
  constructor(message: string, code: number) {
    super(message);
    this.name = "BdevError";
    this.code = code;
  }
}

/** No bdev has that name (ENODEV). */
export class BdevNotFoundError extends BdevError {
  constructor(name: string) {
    super(`No bdev named "${name}"`, -19);
    this.name = "BdevNotFoundError";
  }
}

/** A bdev of that name exists already (EEXIST). */
export class BdevExistsError extends BdevError {
  constructor(name: string) {
    super(`A bdev named "${name}" already exists`, -17);
    this.name = "BdevExistsError";
  }
}

/** The bdev is claimed or open and cannot be changed now (EBUSY). */
export class BdevBusyError extends BdevError {
  constructor(message: string) {
    super(message, -16);
    this.name = "BdevBusyError";
  }
}

/** A parameter is out of its allowed range (EINVAL). */
export class BdevInvalidError extends BdevError {
  constructor(message: string) {
    super(message, -22);
    this.name = "BdevInvalidError";
  }
}

/** An I/O submitted through the promise helpers ended with an error status. */
export class BdevIoError extends BdevError {
  /** The {@link BdevIoStatus} value. */
  readonly status: number;
  constructor(message: string, status: number, errno: number) {
    super(message, errno > 0 ? -errno : -5);
    this.name = "BdevIoError";
    this.status = status;
  }
}
