import { describe, expect, it } from "vitest";
import {
  characterCount,
  formatRelativeTime,
  initials,
  messageTextProblem,
  safeImageUrl,
} from "./format";

const NOW = Date.parse("2025-03-10T12:00:00Z");

describe("formatRelativeTime", () => {
  it.each([
    ["2025-03-10T11:59:50.123456Z", "just now"],
    ["2025-03-10T12:00:05.000000Z", "just now"],
    ["2025-03-10T11:58:00.000000Z", "2 min ago"],
    ["2025-03-10T09:00:00.000000Z", "3 h ago"],
    ["2025-03-07T12:00:00.000000Z", "3 d ago"],
  ])("reads the server's microsecond timestamp %s as %s", (iso, expected) => {
    expect(formatRelativeTime(iso, NOW)).toBe(expected);
  });

  it("falls back to a date for messages older than a week", () => {
    expect(formatRelativeTime("2024-12-25T12:00:00Z", NOW)).toMatch(/2024/);
  });
});

describe("initials", () => {
  it("takes the first letter of the first two words", () => {
    expect(initials("ada king lovelace")).toBe("AK");
    expect(initials("  Élodie  ")).toBe("É");
    expect(initials("")).toBe("?");
  });
});

describe("characterCount", () => {
  it("counts code points like the server, not UTF-16 units", () => {
    expect(characterCount("a😀b")).toBe(3);
  });
});

describe("messageTextProblem", () => {
  it.each(["\u0000", "\u0007", "\u001b[31m", "\u007f", "\u0085", "\u009b"])(
    "names the control character in %j as the server does",
    (control) => {
      const code = control.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0");
      expect(messageTextProblem(`a${control}b`)).toBe(
        control === "\u0000"
          ? "The message contains a NUL character."
          : `The message contains the control character U+${code}, which cannot be shown.`,
      );
    },
  );

  it("accepts text, line breaks and tabs", () => {
    expect(messageTextProblem("line\r\nline\ttab 😀 é")).toBeNull();
  });
});

describe("safeImageUrl", () => {
  it("accepts http(s) pictures only", () => {
    expect(safeImageUrl("https://img.example/a.png")).toBe("https://img.example/a.png");
    expect(safeImageUrl("javascript:alert(1)")).toBeNull();
    expect(safeImageUrl("data:image/svg+xml,<svg onload=alert(1)>")).toBeNull();
    expect(safeImageUrl(null)).toBeNull();
  });
});
