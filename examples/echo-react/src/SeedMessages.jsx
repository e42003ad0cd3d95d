// The seed's two lines, exactly as they are written for Pusher's cloud:
//
//   const echo = new Echo({ broadcaster: 'pusher', key: 'your_key', cluster: 'mt1', forceTLS: true });
//   echo.channel('messages').listen('.new-message', (e) => setMessages((prev) => [...prev, e.message]));
//
// Without a `Pusher` option Echo builds its client with `new window.Pusher(key, options)`.
// The component installs there a pusher-js that applies the pgcast options it receives
// (`config`) over the line's own: pgcast's key instead of 'your_key', and `forceTLS: false`,
// since a page on plain http://localhost has no TLS to force (see README.md).
import { useEffect, useState } from 'react';
import Echo from 'laravel-echo';
import Pusher from 'pusher-js';

function pusherPointedAt(config) {
  return class PgcastPusher extends Pusher {
    constructor(_key, options) {
      const { broadcaster: _broadcaster, ...pgcast } = config;
      super(config.key, { ...options, ...pgcast });
    }
  };
}

export function SeedMessages({ config }) {
  const [messages, setMessages] = useState([]);
  useEffect(() => {
    const previous = window.Pusher;
    window.Pusher = pusherPointedAt(config);
    const echo = new Echo({ broadcaster: 'pusher', key: 'your_key', cluster: 'mt1', forceTLS: true });
    // Echo has built its client; nothing else on the page needs the global.
    window.Pusher = previous;
    echo.channel('messages').listen('.new-message', (e) => setMessages((prev) => [...prev, e.message]));
    return () => echo.disconnect();
  }, [config]);

  return (
    <section aria-labelledby="seed-title">
      <h2 id="seed-title">The seed component (plain laravel-echo)</h2>
      <ul aria-label="Seed messages">
        {messages.map((message) => (
          <li key={message.id}>
            <strong>{message.user?.name ?? 'someone'}</strong>: {message.content}
          </li>
        ))}
      </ul>
    </section>
  );
}
