const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** "just now", "2 min ago", "3 h ago", "5 d ago", then a date. */
export function formatRelativeTime(iso: string, now: number): string {
  const time = Date.parse(iso);
  if (Number.isNaN(time)) return iso;
  // Clocks differ a little between server and browser; a message is never "in the future".
  const elapsed = Math.max(0, now - time);
  if (elapsed < 45_000) return "just now";
  if (elapsed < HOUR) return `${Math.max(1, Math.round(elapsed / MINUTE))} min ago`;
  if (elapsed < DAY) return `${Math.floor(elapsed / HOUR)} h ago`;
  if (elapsed < 7 * DAY) return `${Math.floor(elapsed / DAY)} d ago`;
  return new Date(time).toLocaleDateString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
  });
}

export function formatExactTime(iso: string): string {
  const time = Date.parse(iso);
  if (Number.isNaN(time)) return iso;
  return new Date(time).toLocaleString(undefined, { dateStyle: "full", timeStyle: "medium" });
}

export function initials(name: string): string {
  const letters = name
    .trim()
    .split(/\s+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((word) => Array.from(word)[0] ?? "")
    .join("");
  return letters.toUpperCase() || "?";
}

/** Counts code points, as the server does, so an emoji is one character, not two. */
export function characterCount(text: string): number {
  return Array.from(text).length;
}

// The server's rule (server/text.py): control characters (Unicode category Cc) other than
// line breaks and tabs are refused, and so are lone surrogates.
const REFUSED_IN_MESSAGES = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]|\p{Cs}/u;

/** Why the server would refuse this message text, in its words, or null if it would not. */
export function messageTextProblem(text: string): string | null {
  const found = REFUSED_IN_MESSAGES.exec(text);
  if (!found) return null;
  const code = found[0].codePointAt(0)!;
  if (code === 0) return "The message contains a NUL character.";
  if (code >= 0xd800 && code <= 0xdfff) {
    return "The message contains a lone surrogate (U+D800 to U+DFFF) or bytes that are not UTF-8.";
  }
  const hex = code.toString(16).toUpperCase().padStart(4, "0");
  return `The message contains the control character U+${hex}, which cannot be shown.`;
}

/** Only http(s) images: an avatar URL comes from another service and is not trusted. */
export function safeImageUrl(url: string | null | undefined): string | null {
  if (!url) return null;
  try {
    const parsed = new URL(url, window.location.origin);
    return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
  } catch {
    return null;
  }
}
