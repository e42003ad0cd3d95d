import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { makeMessage } from "../test/factories";
import "../styles.css";
import { MessageItem } from "./MessageItem";

const NOW = Date.parse("2025-01-01T12:05:00Z");

function renderMessage(...args: Parameters<typeof makeMessage>) {
  const message = makeMessage(...args);
  return render(
    <ol>
      <MessageItem message={message} now={NOW} />
    </ol>,
  );
}

describe("MessageItem", () => {
  it("shows markup in a message as literal text and creates no element from it", () => {
    const content = '<img src=x onerror=alert(1)> and <script>alert("x")</script>';
    const { container } = renderMessage(1, { content });

    expect(screen.getByText(content)).toBeInTheDocument();
    expect(container.querySelector("img")).toBeNull();
    expect(container.querySelector("script")).toBeNull();
  });

  it("keeps the author's line breaks", () => {
    const content = "first line\nsecond line\n\n  indented";
    renderMessage(1, { content });

    const paragraph = screen.getByText(/first line/);
    expect(paragraph.textContent).toBe(content);
    expect(paragraph.querySelector("br")).toBeNull();
    expect(getComputedStyle(paragraph).whiteSpace).toBe("pre-wrap");
  });

  it("shows the author, a relative time and the exact time on hover", () => {
    renderMessage(1, { created_at: "2025-01-01T12:03:00Z", updated_at: "2025-01-01T12:03:00Z" });

    expect(screen.getByText("Alice Liddell")).toBeInTheDocument();
    const time = screen.getByText("2 min ago");
    expect(time.tagName).toBe("TIME");
    expect(time).toHaveAttribute("dateTime", "2025-01-01T12:03:00Z");
    expect(time.getAttribute("title")).toContain("2025");
    expect(screen.queryByText("(edited)")).toBeNull();
  });

  it("names a deleted author 'deleted user'", () => {
    renderMessage(1, { user: null });
    expect(screen.getByText("deleted user")).toBeInTheDocument();
  });

  it("marks a message edited after it was posted", () => {
    renderMessage(1, { created_at: "2025-01-01T12:00:00Z", updated_at: "2025-01-01T12:04:00Z" });
    expect(screen.getByText("(edited)")).toBeInTheDocument();
  });

  it("shows initials without an avatar, the picture with one, and never a script URL", () => {
    const { container, rerender } = renderMessage(1);
    expect(screen.getByText("AL")).toBeInTheDocument();

    const withAvatar = makeMessage(1, {
      user: { id: 1, name: "Alice Liddell", avatar_url: "https://img.example/a.png" },
    });
    rerender(
      <ol>
        <MessageItem message={withAvatar} now={NOW} />
      </ol>,
    );
    expect(container.querySelector("img")).toHaveAttribute("src", "https://img.example/a.png");

    const scripted = makeMessage(1, {
      user: { id: 1, name: "Alice Liddell", avatar_url: "javascript:alert(1)" },
    });
    rerender(
      <ol>
        <MessageItem message={scripted} now={NOW} />
      </ol>,
    );
    expect(container.querySelector("img")).toBeNull();
    expect(screen.getByText("AL")).toBeInTheDocument();
  });
});
