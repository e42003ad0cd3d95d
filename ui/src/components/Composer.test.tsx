import { render, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import { ApiError } from "../lib/api";
import { Composer } from "./Composer";

function deferred() {
  let resolve!: () => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

function setup(maxChars = 100, onSend = vi.fn((_content: string) => Promise.resolve())) {
  const user = userEvent.setup();
  render(<Composer maxChars={maxChars} onSend={onSend} />);
  const textarea = screen.getByLabelText("Message");
  const sendButton = screen.getByRole("button", { name: "Send" });
  return { user, onSend, textarea, sendButton };
}

describe("Composer", () => {
  it("sends the draft on Enter and clears it once accepted", async () => {
    const { user, onSend, textarea } = setup();

    await user.type(textarea, "hello there{Enter}");

    expect(onSend).toHaveBeenCalledExactlyOnceWith("hello there");
    await waitFor(() => expect(textarea).toHaveValue(""));
  });

  it("adds a new line on Shift+Enter instead of sending", async () => {
    const { user, onSend, textarea } = setup();

    await user.type(textarea, "line one{Shift>}{Enter}{/Shift}line two");

    expect(textarea).toHaveValue("line one\nline two");
    expect(onSend).not.toHaveBeenCalled();

    await user.keyboard("{Enter}");
    expect(onSend).toHaveBeenCalledExactlyOnceWith("line one\nline two");
  });

  it("sends with the Send button too", async () => {
    const { user, onSend, textarea, sendButton } = setup();
    await user.type(textarea, "by click");
    await user.click(sendButton);
    expect(onSend).toHaveBeenCalledExactlyOnceWith("by click");
  });

  it("does not send an empty or blank draft", async () => {
    const { user, onSend, textarea, sendButton } = setup();
    expect(sendButton).toBeDisabled();

    await user.type(textarea, "   {Enter}");

    expect(onSend).not.toHaveBeenCalled();
    expect(sendButton).toBeDisabled();
  });

  it("is disabled while sending, so a message cannot go twice", async () => {
    const pending = deferred();
    const onSend = vi.fn((_content: string) => pending.promise);
    const { user, textarea } = setup(100, onSend);

    await user.type(textarea, "once{Enter}");

    expect(textarea).toBeDisabled();
    expect(screen.getByRole("button", { name: "Sending…" })).toBeDisabled();
    await user.keyboard("{Enter}");
    expect(onSend).toHaveBeenCalledTimes(1);

    pending.resolve();
    await waitFor(() => expect(textarea).toBeEnabled());
    expect(textarea).toHaveValue("");
    expect(textarea).toHaveFocus();
  });

  it("shows the server's reason and keeps the draft when the message is refused", async () => {
    const onSend = vi.fn((_content: string) =>
      Promise.reject(new ApiError(422, "content_too_long", "Messages can be at most 10000 characters.")),
    );
    const { user, textarea } = setup(100, onSend);

    await user.type(textarea, "my precious draft{Enter}");

    expect(await screen.findByRole("alert")).toHaveTextContent(
      "Messages can be at most 10000 characters.",
    );
    expect(textarea).toHaveValue("my precious draft");
    expect(textarea).toBeEnabled();
  });

  it("clears the error once a later send succeeds", async () => {
    const onSend = vi
      .fn((_content: string) => Promise.resolve())
      .mockRejectedValueOnce(new ApiError(429, "rate_limited", "Slow down."));
    const { user, textarea } = setup(100, onSend);

    await user.type(textarea, "hi{Enter}");
    expect(await screen.findByRole("alert")).toHaveTextContent("Slow down.");
    await user.keyboard("{Enter}");
    await waitFor(() => expect(screen.queryByRole("alert")).toBeNull());
    expect(onSend).toHaveBeenCalledTimes(2);
  });

  it("shows a character counter only near the limit, and blocks sending past it", async () => {
    const { user, onSend, textarea, sendButton } = setup(10);

    await user.type(textarea, "12345678");
    expect(screen.queryByText(/\/ 10/)).toBeNull();

    await user.type(textarea, "9");
    expect(screen.getByText("9 / 10")).toBeInTheDocument();
    expect(sendButton).toBeEnabled();

    await user.type(textarea, "abc");
    expect(screen.getByText("2 characters over the limit of 10")).toBeInTheDocument();
    expect(textarea).toHaveAttribute("aria-invalid", "true");
    expect(sendButton).toBeDisabled();
    await user.keyboard("{Enter}");
    expect(onSend).not.toHaveBeenCalled();
  });

  it("says 1 character, not 1 characters, over the limit", async () => {
    const { user, textarea } = setup(10);
    await user.type(textarea, "12345678901");
    expect(screen.getByText("1 character over the limit of 10")).toBeInTheDocument();
  });

  it("refuses a control character before sending, and says which one", async () => {
    const { user, onSend, textarea, sendButton } = setup();

    await user.click(textarea);
    await user.paste("ding\u0007 dong");

    expect(screen.getByRole("alert")).toHaveTextContent(
      "The message contains the control character U+0007, which cannot be shown.",
    );
    expect(textarea).toHaveAttribute("aria-invalid", "true");
    expect(sendButton).toBeDisabled();
    await user.keyboard("{Enter}");
    expect(onSend).not.toHaveBeenCalled();
    expect(textarea).toHaveValue("ding\u0007 dong");
  });

  it("keeps line breaks and tabs, which the server accepts", async () => {
    const { user, onSend, textarea } = setup();
    await user.click(textarea);
    await user.paste("a\tb\nc");
    await user.keyboard("{Enter}");
    expect(screen.queryByRole("alert")).toBeNull();
    expect(onSend).toHaveBeenCalledExactlyOnceWith("a\tb\nc");
  });

  it("counts an emoji as one character, as the server does", async () => {
    const { user, textarea } = setup(10);
    await user.type(textarea, "12345678😀");
    expect(screen.getByText("9 / 10")).toBeInTheDocument();
  });
});
