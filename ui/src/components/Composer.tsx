import { useEffect, useId, useRef, useState, type FormEvent, type KeyboardEvent } from "react";
import { ApiError } from "../lib/api";
import { characterCount, messageTextProblem } from "../lib/format";

/** The counter appears once a draft passes this share of the limit. */
const COUNTER_THRESHOLD = 0.8;

export interface ComposerProps {
  maxChars: number;
  /** Resolves once the server accepted the message; rejects with the reason otherwise. */
  onSend(content: string): Promise<void>;
  /** The field's label, e.g. "Message to Bob" in a conversation. */
  label?: string;
  placeholder?: string;
}

export function Composer({
  maxChars,
  onSend,
  label = "Message",
  placeholder = "Write a message…",
}: ComposerProps) {
  const [draft, setDraft] = useState("");
  const [sending, setSending] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const textareaRef = useRef<HTMLTextAreaElement>(null);
  const id = useId();
  const wasSending = useRef(false);

  useEffect(() => {
    // Disabling the textarea while sending took focus away; give it back for the next message.
    if (wasSending.current && !sending) textareaRef.current?.focus();
    wasSending.current = sending;
  }, [sending]);

  const length = characterCount(draft);
  const tooLong = length > maxChars;
  const over = length - maxChars;
  const showCounter = length > maxChars * COUNTER_THRESHOLD;
  // Said at once, not after a round trip: such characters are invisible in the textarea, so
  // the user could not find what the server's refusal is about.
  const textProblem = messageTextProblem(draft);
  const shownError = textProblem ?? error;
  const canSend = !sending && !tooLong && textProblem === null && draft.trim() !== "";

  async function send() {
    if (!canSend) return;
    setSending(true);
    setError(null);
    try {
      await onSend(draft);
      setDraft("");
    } catch (caught) {
      setError(
        caught instanceof ApiError ? caught.message : "The message could not be sent. Try again.",
      );
    } finally {
      setSending(false);
    }
  }

  function handleSubmit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    void send();
  }

  function handleKeyDown(event: KeyboardEvent<HTMLTextAreaElement>) {
    // Enter while an input method is composing picks a candidate; it must not send.
    if (event.key !== "Enter" || event.shiftKey || event.nativeEvent.isComposing) return;
    event.preventDefault();
    void send();
  }

  const describedBy = [
    `${id}-hint`,
    showCounter ? `${id}-counter` : null,
    shownError ? `${id}-error` : null,
  ]
    .filter(Boolean)
    .join(" ");

  return (
    <form className="composer" onSubmit={handleSubmit} aria-busy={sending}>
      <label htmlFor={`${id}-input`} className="composer-label">
        {label}
      </label>
      <div className="composer-row">
        <textarea
          id={`${id}-input`}
          ref={textareaRef}
          className="composer-input"
          value={draft}
          onChange={(event) => setDraft(event.target.value)}
          onKeyDown={handleKeyDown}
          disabled={sending}
          rows={2}
          placeholder={placeholder}
          aria-describedby={describedBy}
          aria-invalid={tooLong || textProblem !== null}
        />
        <button type="submit" className="composer-send" disabled={!canSend}>
          {sending ? "Sending…" : "Send"}
        </button>
      </div>
      <div className="composer-footer">
        <p id={`${id}-hint`} className="composer-hint">
          Enter to send, Shift+Enter for a new line
        </p>
        {showCounter && (
          <p
            id={`${id}-counter`}
            className={tooLong ? "composer-counter composer-counter-over" : "composer-counter"}
          >
            {tooLong
              ? `${over} ${over === 1 ? "character" : "characters"} over the limit of ${maxChars}`
              : `${length} / ${maxChars}`}
          </p>
        )}
      </div>
      {shownError && (
        <p id={`${id}-error`} className="error" role="alert">
          {shownError}
        </p>
      )}
    </form>
  );
}
