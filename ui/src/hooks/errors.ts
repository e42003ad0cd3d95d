import { ApiError } from "../lib/api";

/** A sentence for the user: the server's own when it gave one. */
export function describeError(error: unknown): string {
  return error instanceof ApiError ? error.message : "Something went wrong. Please try again.";
}

export function isSignedOut(error: unknown): boolean {
  return error instanceof ApiError && error.status === 401;
}
