import type { PresenceEvent, PresenceMember, User } from "./types";

/**
 * Who is on a presence channel, as pure data: each user at most once, whichever path
 * (the server's list, a join, a join replayed after a reconnect) named them.
 *
 * The server's `presence` frame is the truth: it comes once the socket is live, after any
 * replay, and replaces the list outright. Joins and leaves keep it current in between; a
 * leave of someone not listed (who left before the list was taken) has nothing to remove.
 */
export interface PresenceState {
  /** Each user once, in the order they came. */
  members: PresenceMember[];
  /** False until the server's first list has arrived. */
  loaded: boolean;
  /**
   * Whether the list came over the socket open now. A new socket replays what it missed
   * and then sends its own list; until then the one shown may be out of date.
   */
  current: boolean;
}

export const EMPTY_PRESENCE: PresenceState = { members: [], loaded: false, current: false };

/** A new socket is live: the list shown is the last one's until this one sends its own. */
export function presenceReconnected(state: PresenceState): PresenceState {
  return state.current ? { ...state, current: false } : state;
}

function sameMember(a: PresenceMember, b: PresenceMember): boolean {
  return a.id === b.id && a.name === b.name && a.avatar_url === b.avatar_url;
}

/** One entry per id, where it first appears, with what the last mention says of it. */
function uniqueMembers(members: PresenceMember[]): PresenceMember[] {
  const byId = new Map<string, PresenceMember>();
  for (const member of members) byId.set(member.id, member);
  const seen = new Set<string>();
  const unique: PresenceMember[] = [];
  for (const { id } of members) {
    const member = byId.get(id);
    if (member === undefined || seen.has(id)) continue;
    seen.add(id);
    unique.push(member);
  }
  return unique;
}

export function applyPresenceEvent(state: PresenceState, event: PresenceEvent): PresenceState {
  switch (event.type) {
    case "members":
      return { members: uniqueMembers(event.members), loaded: true, current: true };
    case "added": {
      const index = state.members.findIndex((member) => member.id === event.member.id);
      if (index === -1) return { ...state, members: [...state.members, event.member] };
      // Already listed (a replayed join): keep the place, take what the join says of them now.
      const current = state.members[index];
      if (current !== undefined && sameMember(current, event.member)) return state;
      const members = state.members.slice();
      members[index] = event.member;
      return { ...state, members };
    }
    case "removed": {
      if (!state.members.some((member) => member.id === event.id)) return state;
      return { ...state, members: state.members.filter((member) => member.id !== event.id) };
    }
  }
}

export interface OnlineEntry {
  member: PresenceMember;
  /** The signed-in user, however many tabs they have open. */
  isMe: boolean;
}

const byName = new Intl.Collator(undefined, { sensitivity: "base", numeric: true });

/** The signed-in user first, then everyone else by name (and id, so the order is stable). */
export function onlineForDisplay(members: PresenceMember[], me: number): OnlineEntry[] {
  const myId = String(me);
  return members
    .map((member) => ({ member, isMe: member.id === myId }))
    .sort(
      (a, b) =>
        Number(b.isMe) - Number(a.isMe) ||
        byName.compare(a.member.name, b.member.name) ||
        byName.compare(a.member.id, b.member.id),
    );
}

/** The pgcast user a member is, to write to; null for an id that is not a user's. */
export function memberAsUser(member: PresenceMember): User | null {
  if (!/^[1-9][0-9]*$/.test(member.id)) return null;
  const id = Number(member.id);
  if (!Number.isSafeInteger(id)) return null;
  return { id, name: member.name, avatar_url: member.avatar_url };
}
