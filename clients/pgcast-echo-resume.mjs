/**
 * pgcast resume for pusher-js and Laravel Echo: after a reconnect, every channel gets the
 * events it missed while the socket was away, exactly once and in commit order, before its
 * live events. Without this helper a client behaves as it would on Pusher: it gets the
 * events sent after it resubscribed.
 *
 *   import Echo from 'laravel-echo';
 *   import Pusher from 'pusher-js';
 *   import { enablePgcastResume } from './pgcast-echo-resume.mjs';
 *
 *   const echo = new Echo({ broadcaster: 'pusher', Pusher, key, wsHost, wsPort, ... });
 *   enablePgcastResume(echo.connector.pusher, {
 *     onResumeComplete: ({ channel, complete, reason }) => {
 *       if (!complete) reloadHistory(channel); // the server could not honour the position
 *     },
 *   });
 *
 * How it works (README, "Resume"): pgcast puts a `cursor` beside every stored event it
 * sends (pusher-js ignores the key) and a position in each `subscription_succeeded`. This
 * helper keeps the last position of each channel and, when pusher-js resubscribes that
 * channel, sends `pgcast:resume` {channel, cursor} just before pusher-js's own
 * `pusher:subscribe` (through the Pusher instance's public `send_event`). pgcast then sends
 * the missed events, `pgcast:resume_complete` {channel, complete, cursor, reason?}, then live
 * events. `complete: false` means the position could not be honoured (too old, another
 * database): the channel continues live from now, and the application should reload.
 *
 * Cursors are read from the raw frames of pusher-js's current transport
 * (`pusher.connection.connection.transport`), the one place they are visible; this relies on
 * pusher-js 7 and 8's internals, which the pgcast tests pin (pusher-js 8.6).
 */
export function enablePgcastResume(pusher, { onResumeComplete } = {}) {
  const cursors = new Map();
  const sendEvent = pusher.send_event.bind(pusher);

  pusher.send_event = (event, data, channel) => {
    if (event === 'pusher:subscribe' && data && cursors.has(data.channel)) {
      sendEvent('pgcast:resume', { channel: data.channel, cursor: cursors.get(data.channel) });
    } else if (event === 'pusher:unsubscribe' && data) {
      cursors.delete(data.channel);
    }
    return sendEvent(event, data, channel);
  };

  const decoded = (data) => {
    if (typeof data !== 'string') return data;
    try {
      return JSON.parse(data);
    } catch {
      return null;
    }
  };

  const track = (message) => {
    let frame;
    try {
      frame = JSON.parse(message.data);
    } catch {
      return;
    }
    if (!frame || typeof frame.channel !== 'string') return;
    if (typeof frame.cursor === 'string') {
      cursors.set(frame.channel, frame.cursor);
    } else if (frame.event === 'pusher_internal:subscription_succeeded') {
      const cursor = decoded(frame.data)?.pgcast?.cursor;
      if (typeof cursor === 'string') cursors.set(frame.channel, cursor);
    } else if (frame.event === 'pgcast:resume_complete') {
      const result = decoded(frame.data);
      if (result && typeof result.cursor === 'string') {
        cursors.set(frame.channel, result.cursor);
        if (onResumeComplete) onResumeComplete(result);
      }
    }
  };

  let tapped = null;
  const tap = () => {
    const transport = pusher.connection.connection && pusher.connection.connection.transport;
    if (transport && transport !== tapped) {
      transport.bind('message', track);
      tapped = transport;
    }
  };
  pusher.connection.bind('connected', tap);
  if (pusher.connection.state === 'connected') tap();

  return {
    /** The last position of `channel` this client holds, or undefined. */
    cursor: (channel) => cursors.get(channel),
  };
}
