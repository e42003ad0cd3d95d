// Drives one real Laravel Echo (over pusher-js) against a running pgcast for the pytest
// suite. Commands arrive as JSON lines on stdin; everything the client sees is printed as
// JSON lines on stdout.
//
// Environment: PGCAST_URL (http://127.0.0.1:PORT), PUSHER_KEY, and optionally COOKIE (a
// signed-in browser's cookie header), RESUME=1 (use clients/pgcast-echo-resume.mjs), and
// SIGNING_SECRET (sign channel and user authorizations here, as an external backend with the
// app secret would, instead of asking pgcast's /broadcasting/auth).
//
// Node has no browser around pusher-js: the one thing emulated here is what a browser adds
// by itself, the cookie and the Origin header on the WebSocket upgrade and on the
// authorization requests. Everything else is pusher-js's and Echo's own code.
import crypto from 'node:crypto';
import readline from 'node:readline';
import Pusher from 'pusher-js';
import Echo from 'laravel-echo';
import { enablePgcastResume } from '../../clients/pgcast-echo-resume.mjs';

const base = process.env.PGCAST_URL;
const origin = base;
const cookie = process.env.COOKIE || '';
const secret = process.env.SIGNING_SECRET || '';
const key = process.env.PUSHER_KEY;
const url = new URL(base);

const out = (record) => process.stdout.write(JSON.stringify(record) + '\n');

const browserHeaders = () => (cookie ? { Cookie: cookie, Origin: origin } : { Origin: origin });

const FayeClient = Pusher.Runtime.getWebSocketAPI();
Pusher.Runtime.getWebSocketAPI = () =>
  function BrowserWebSocket(socketUrl) {
    return new FayeClient(socketUrl, [], { headers: browserHeaders() });
  };
const NodeXHR = Pusher.Runtime.getXHRAPI();
Pusher.Runtime.getXHRAPI = () =>
  function BrowserXHR() {
    const xhr = new NodeXHR();
    const open = xhr.open;
    xhr.open = (...args) => {
      open.apply(xhr, args);
      xhr.setDisableHeaderCheck(true);
      for (const [name, value] of Object.entries(browserHeaders())) {
        xhr.setRequestHeader(name, value);
      }
      xhr.setDisableHeaderCheck(false);
    };
    return xhr;
  };

const sign = (text) => key + ':' + crypto.createHmac('sha256', secret).update(text).digest('hex');
let externalUser = null;

const options = {
  broadcaster: 'pusher',
  Pusher,
  key,
  cluster: 'mt1',
  wsHost: url.hostname,
  wsPort: Number(url.port),
  forceTLS: false,
  enabledTransports: ['ws', 'wss'],
  disableStats: true,
  authEndpoint: base + '/broadcasting/auth',
  userAuthentication: { endpoint: base + '/broadcasting/user-auth', transport: 'ajax' },
};
if (secret) {
  // What a Laravel backend's /broadcasting/auth answers, signed with the shared secret.
  options.authorizer = (channel) => ({
    authorize: (socketId, callback) => {
      if (channel.name.startsWith('presence-')) {
        const channelData = JSON.stringify({ user_id: externalUser.id, user_info: externalUser.info });
        callback(null, {
          auth: sign(`${socketId}:${channel.name}:${channelData}`),
          channel_data: channelData,
        });
      } else {
        callback(null, { auth: sign(`${socketId}:${channel.name}`) });
      }
    },
  });
  options.userAuthentication = {
    customHandler: ({ socketId }, callback) => {
      const userData = JSON.stringify({ id: externalUser.id, user_info: externalUser.info });
      callback(null, { auth: sign(`${socketId}::user::${userData}`), user_data: userData });
    },
  };
}

if (process.env.PUSHER_DEBUG) Pusher.log = (message) => process.stderr.write('pusher: ' + message + '\n');
const echo = new Echo(options);
const pusher = echo.connector.pusher;
if (process.env.RESUME === '1') {
  enablePgcastResume(pusher, { onResumeComplete: (result) => out({ type: 'resume_complete', ...result }) });
}

pusher.connection.bind('state_change', ({ previous, current }) =>
  out({ type: 'state', previous, current, socket_id: pusher.connection.socket_id }),
);
pusher.connection.bind('error', (error) => out({ type: 'connection_error', error: error && (error.error || error.data || error) }));

const channels = new Map();
const watch = (name, channel) => {
  channels.set(name, channel);
  channel.subscribed(() => out({ type: 'subscribed', channel: name }));
  channel.error((error) => out({ type: 'subscription_error', channel: name, error }));
  return channel;
};
const memberList = (members) => {
  const ids = [];
  members.each((member) => ids.push(member.id));
  return { ids: ids.sort(), count: members.count, me: members.me && members.me.id };
};
const received = (channel, event) => (data, metadata) =>
  out({ type: 'event', channel, event, data, ...(metadata && metadata.user_id ? { user_id: metadata.user_id } : {}) });

const commands = {
  listen: ({ channel, event }) => watch(channel, echo.channel(channel)).listen(event, received(channel, event)),
  private: ({ channel, event }) => watch('private-' + channel, echo.private(channel)).listen(event, received('private-' + channel, event)),
  notification: ({ channel }) =>
    watch('private-' + channel, echo.private(channel)).notification((n) => out({ type: 'notification', channel: 'private-' + channel, data: n })),
  join: ({ channel }) => {
    const name = 'presence-' + channel;
    const presence = echo.join(channel);
    watch(name, presence);
    presence
      .here((members) => out({ type: 'here', channel: name, members }))
      .joining((member) => out({ type: 'joining', channel: name, member }))
      .leaving((member) => out({ type: 'leaving', channel: name, member }));
    // Echo hands over user_info alone; the user ids come from pusher-js's own events.
    const subscription = presence.subscription;
    subscription.bind('pusher:subscription_succeeded', (members) =>
      out({ type: 'member_list', channel: name, ...memberList(members) }),
    );
    subscription.bind('pusher:member_added', (member) => out({ type: 'member_added', channel: name, id: member.id, info: member.info }));
    subscription.bind('pusher:member_removed', (member) => out({ type: 'member_removed', channel: name, id: member.id, info: member.info }));
  },
  members: ({ channel }) => out({ type: 'member_list', channel, now: true, ...memberList(channels.get(channel).subscription.members) }),
  listenOn: ({ channel, event }) => channels.get(channel).listen(event, received(channel, event)),
  listenForWhisper: ({ channel, event }) => channels.get(channel).listenForWhisper(event, received(channel, 'client-' + event)),
  whisper: ({ channel, event, data }) => channels.get(channel).whisper(event, data),
  leave: ({ channel }) => {
    echo.leaveChannel(channel);
    channels.delete(channel);
    out({ type: 'left', channel });
  },
  signin: ({ user } = {}) => {
    externalUser = user || null;
    pusher.user.bind_global((event, data) => out({ type: 'user_event', event, data }));
    pusher.user.bind('pusher:signin_error', (error) => out({ type: 'signin_error', error }));
    echo.connector.signin();
  },
  userState: () => {
    const channel = pusher.user.serverToUserChannel;
    out({ type: 'user_state', user_data: pusher.user.user_data, channel: channel && channel.name, subscribed: Boolean(channel && channel.subscribed) });
  },
  externalUser: ({ user }) => {
    externalUser = user;
  },
  raw: ({ event, data, channel }) => pusher.send_event(event, data, channel),
  disconnect: () => pusher.disconnect(),
  connect: () => pusher.connect(),
  socketId: () => out({ type: 'socket_id', socket_id: echo.socketId() }),
  ping: ({ id }) => out({ type: 'pong', id }),
  exit: () => {
    pusher.disconnect();
    setTimeout(() => process.exit(0), 50);
  },
};

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (!line.trim()) return;
  const command = JSON.parse(line);
  try {
    commands[command.op](command);
  } catch (error) {
    out({ type: 'driver_error', op: command.op, message: String(error && error.message ? error.message : error) });
  }
});
process.stdin.on('end', () => commands.exit());
out({ type: 'ready' });
